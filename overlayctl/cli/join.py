"""`overlayctl join`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from overlayctl.cli.common import connection_options, inventory_option, load, open_session
from overlayctl.errors import ExitCode
from overlayctl.init import InitOptions
from overlayctl.join import check_names, run_join


@click.command()
@inventory_option
@connection_options
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@click.option("--etcd-timeout", type=float, default=90.0, show_default=True)
@click.argument("hosts", nargs=-1, required=True)
def join(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    break_lock: bool,
    etcd_timeout: float,
    hosts: tuple[str, ...],
) -> None:
    """Add HOSTS (already listed in the inventory) to the running cluster."""
    inv = load(inventory)
    check_names(inv, list(hosts))
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          break_lock=break_lock, etcd_timeout=etcd_timeout)  # fmt: skip
    with open_session(inv, "join", options, lock=True) as session:
        try:
            report = run_join(session, list(hosts), options)
        finally:
            session.reporter.close()
        click.echo(
            f"join: {report.total_changes} changes on {len(report.plans)} hosts in "
            f"{report.seconds:.1f} s; log: {session.reporter.log_path}"
        )
    if session.failures:
        sys.exit(ExitCode.FAILED)
