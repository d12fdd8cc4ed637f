"""overlay-agent's entry point: parse the options (see agent/options/table.py), run the agent.

A bad option value is one line on stderr naming the option, exit status 2, no traceback.

Everything heavy is imported inside :func:`main`, with the cyclic garbage collector off: during
imports it only walks the growing set of module objects, ~15 % of the agent's start-up CPU.
It is turned back on before the agent runs, with the objects made so far frozen out of its way.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.options import AgentOptions

PROG = "overlay-agent"


def parse_args(argv: Sequence[str]) -> tuple[AgentOptions, list[str]] | int:
    """The options, or an exit status (0 after --help/--version, 2 for a bad option)."""
    from agent.options import UsageError, normalize_argv, parse  # noqa: PLC0415

    try:
        result = parse(normalize_argv(argv), PROG)
    except UsageError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return 2
    if isinstance(result, str):  # --help and --version
        sys.stdout.write(result + "\n")
        return 0
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Run overlay-agent; exits with the agent's status."""
    gc.disable()
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        if isinstance(parsed, int):
            sys.exit(parsed)
        import logging  # noqa: PLC0415

        from agent.logs import event, setup_logging  # noqa: PLC0415

        opts, ignored = parsed
        setup_logging(opts.log_level)
        log = logging.getLogger("agent")
        for flag in ignored:
            note = f"{flag} is accepted and ignored"
            event(log, logging.INFO, "option-ignored", note, option=flag)
        from agent.daemon import Agent  # noqa: PLC0415
    finally:
        gc.freeze()
        gc.enable()
    sys.exit(Agent(opts).run())
