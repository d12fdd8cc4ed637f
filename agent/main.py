"""overlay-agent's entry point: parse the options (see agent/options.py), run the agent.

A bad option value is one line on stderr naming the option, exit status 2, no traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from agent.logs import event, setup_logging
from agent.options import AgentOptions, command, normalize_argv

PROG = "overlay-agent"


def parse_args(argv: Sequence[str]) -> tuple[AgentOptions, list[str]] | int:
    """The options, or an exit status (0 after --help/--version, 2 for a bad option)."""
    try:
        result = command.main(normalize_argv(argv), prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        click.echo(f"{PROG}: error: {message}", err=True)
        return 2
    except click.Abort:
        return 1
    if isinstance(result, int):  # --help and --version
        return result
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Run overlay-agent; exits with the agent's status."""
    parsed = parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        sys.exit(parsed)
    opts, ignored = parsed
    setup_logging(opts.log_level)
    log = logging.getLogger("agent")
    for flag in ignored:
        event(log, logging.INFO, "option-ignored", f"{flag} is accepted and ignored", option=flag)
    from agent.daemon import Agent  # noqa: PLC0415 - keeps --help fast and etcd-free

    sys.exit(Agent(opts).run())
