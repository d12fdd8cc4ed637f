"""Commands that are listed in the group but not built yet. Each says so and exits non-zero."""

from __future__ import annotations

import click

from overlayctl.errors import ExitCode, OverlayctlError

# command name -> (one-line help, the issue that builds it)
_PENDING = {
    "reset": ("Undo what init did on some or all hosts.", 5),
}


def _pending_command(name: str, help_text: str, issue: int) -> click.Command:
    def callback(**_: object) -> None:
        raise OverlayctlError(
            f"'{name}' is not implemented in this version yet (tracked as issue #{issue})",
            ExitCode.NOT_IMPLEMENTED,
        )

    return click.Command(
        name,
        callback=callback,
        help=f"{help_text} (not implemented yet)",
        params=[click.Argument(["args"], nargs=-1)],
        context_settings={"ignore_unknown_options": True},
    )


COMMANDS = [_pending_command(name, text, issue) for name, (text, issue) in _PENDING.items()]
