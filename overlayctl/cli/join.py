"""`overlayctl join`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.join import check_names, run_join
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    etcd_timeout_option,
    inventory_option,
    load,
    output_option,
    run_session,
)
from overlayctl.cli.init import summary
from overlayctl.phases.base import RolloutOptions, RolloutReport


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@etcd_timeout_option
@click.argument("hosts", nargs=-1, required=True)
def join(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    break_lock: bool,
    etcd_timeout: float,
    hosts: tuple[str, ...],
) -> Outcome:
    """Add HOSTS (already listed in the inventory) to the running cluster."""
    inv = load(inventory)
    check_names(inv, list(hosts))
    options = RolloutOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                             break_lock=break_lock, etcd_timeout=etcd_timeout)  # fmt: skip
    report = RolloutReport()
    with run_session(inv, "join", options, lock=True) as run:
        run_join(run.session, list(hosts), options, report)
    return summary(run, "join", report)
