"""`overlayctl reset`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.reset import ResetReport, run_reset, targets
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    inventory_option,
    load,
    output_option,
    run_session,
)
from overlayctl.remote.session import RunOptions


@click.command()
@inventory_option
@connection_options
@output_option("table")
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
) -> Outcome:
    """Undo init on HOSTS (default: the whole cluster, after asking)."""
    inv = load(inventory)
    leaving = targets(inv, list(hosts))
    if not hosts and not yes:
        # On stderr: stdout may be reserved for the JSON document. Declining raises click.Abort,
        # which the group reports as "aborted, nothing changed" (exit 1).
        click.confirm(f"Reset all {len(leaving)} hosts of cluster {inv.cluster.name} "
                      "(etcd data included)?", abort=True, err=True)  # fmt: skip
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                         break_lock=break_lock)  # fmt: skip
    report = ResetReport()
    with run_session(inv, "reset", options, lock=True) as run:
        run_reset(run.session, list(hosts), force, report)
    text = "\n".join(
        f"{name:<12} reset     {'; '.join(steps)}" for name, steps in report.done.items()
    )
    return run.ended(text, {"hosts": report.done}, "reset")
