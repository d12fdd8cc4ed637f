"""`overlayctl reset`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from overlayctl.cli.common import connection_options, inventory_option, load, open_session
from overlayctl.errors import ExitCode
from overlayctl.reset import run_reset, targets
from overlayctl.session import RunOptions


@click.command()
@inventory_option
@connection_options
@click.option("--yes", is_flag=True, help="Do not ask before resetting the whole cluster.")
@click.option("--force", is_flag=True, help="Remove etcd members even below quorum.")
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@click.argument("hosts", nargs=-1)
def reset(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    yes: bool,
    force: bool,
    break_lock: bool,
    hosts: tuple[str, ...],
) -> None:
    """Undo init on HOSTS (default: the whole cluster, after asking)."""
    inv = load(inventory)
    leaving = targets(inv, list(hosts))
    if not hosts and not yes:
        click.confirm(f"Reset all {len(leaving)} hosts of cluster {inv.cluster.name} "
                      "(etcd data included)?", abort=True)  # fmt: skip
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                         break_lock=break_lock)  # fmt: skip
    with open_session(inv, "reset", options, lock=True) as session:
        try:
            report = run_reset(session, list(hosts), force)
        finally:
            session.reporter.close()
        for name, steps in report.done.items():
            click.echo(f"{name:<12} reset     {'; '.join(steps)}")
    if session.failures:
        sys.exit(ExitCode.FAILED)
