"""The `overlayctl` Click group. Each command module only parses options and calls one function."""

from __future__ import annotations

import sys

import click

from overlayctl import __version__
from overlayctl.cli import lab
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


class _Group(click.Group):
    """Turns OverlayctlError into one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OverlayctlError as exc:
            click.echo(f"overlayctl: error: {exc}", err=True)
            sys.exit(int(exc.code))
        except KeyboardInterrupt:
            click.echo("overlayctl: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="overlayctl")
def main() -> None:
    """Bring up etcd, a flannel-compatible overlay network and docker on a set of hosts over SSH."""


for command in (
    init,
    join,
    plan,
    status,
    verify,
    render,
    reset,
    lab.lab,
    wheelhouse,
    inventory,
    etcd,
    certs,
):
    main.add_command(command)

__all__ = ["ExitCode", "main"]
