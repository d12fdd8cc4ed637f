"""The `overlayctl` Click group. Each command module only parses options and calls one function."""

from __future__ import annotations

import os
import sys
import traceback

import click

from overlayctl import __version__
from overlayctl.cli import lab
from overlayctl.cli.adopt import adopt
from overlayctl.cli.common import error_entry, json_mode, print_document, set_json_mode
from overlayctl.cli.completion import completion
from overlayctl.cli.doctor import doctor
from overlayctl.cli.etcd import certs, etcd
from overlayctl.cli.init import init, plan
from overlayctl.cli.inventory import inventory
from overlayctl.cli.join import join
from overlayctl.cli.render import render
from overlayctl.cli.reset import reset
from overlayctl.cli.status import status
from overlayctl.cli.verify import verify
from overlayctl.cli.wheelhouse import wheelhouse
from overlayctl.errors import ExitCode, OverlayctlError


def _asks_json(args: list[str]) -> bool:
    """Whether ARGS ask for `-o json` in any spelling, before Click has parsed them."""
    for i, arg in enumerate(args):
        if arg == "--":
            return False
        if arg in ("-o", "--output") and args[i + 1 : i + 2] == ["json"]:
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


class _Group(click.Group):
    """Ends every command the same way: one line on stderr and a distinct exit code, never a
    traceback; with `-o json` also the one JSON document on stdout (`ok: false`, `errors`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        set_json_mode(_asks_json(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OverlayctlError as exc:
            self._fail(ctx, f"error: {exc}", str(exc), int(exc.code))
        except click.Abort:
            self._fail(ctx, "aborted, nothing changed", "aborted, nothing changed", 1)
        except click.UsageError as exc:
            if not json_mode():
                raise
            exc.show()
            self._fail(ctx, "", f"usage: {exc.format_message()}", exc.exit_code)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted", "interrupted", 130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            # A defect of ours: still one line (and the JSON document); the traceback on demand.
            if os.environ.get("OVERLAYCTL_DEBUG"):
                traceback.print_exc()
            what = f"{type(exc).__name__}: {exc}"
            self._fail(ctx, f"internal error: {what} (a bug: please report it; "
                       "OVERLAYCTL_DEBUG=1 prints the traceback)", f"internal error: {what}",
                       ExitCode.FAILED)  # fmt: skip

    @staticmethod
    def _fail(ctx: click.Context, line: str, message: str, code: int) -> None:
        if line:
            click.echo(f"overlayctl: {line}", err=True)
        if json_mode():
            phase = ctx.invoked_subcommand
            print_document({"ok": False, "errors": [error_entry(message, phase=phase)]})
        sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="overlayctl")
def main() -> None:
    """Bring up etcd, a flannel-compatible overlay network and docker on a set of hosts over SSH."""


for command in (
    init,
    adopt,
    join,
    plan,
    status,
    verify,
    doctor,
    render,
    reset,
    lab.lab,
    wheelhouse,
    inventory,
    etcd,
    certs,
    completion,
):
    main.add_command(command)

__all__ = ["ExitCode", "main"]
