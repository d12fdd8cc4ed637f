"""overlay-agent's command line (flanneld's flag names)."""

from __future__ import annotations

import sys

import click

from agent import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="overlay-agent")
def main() -> None:
    """Lease a subnet in etcd, program the overlay data plane, write /run/flannel/subnet.env."""
    click.echo("overlay-agent: not implemented in this version yet (tracked as issue #4)", err=True)
    sys.exit(5)
