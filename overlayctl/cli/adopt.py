"""`overlayctl adopt`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.adopt import Adoption, AdoptOptions, AdoptPlan, run_adopt
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
from overlayctl.phases.base import RolloutReport
from overlayctl.text import printable


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("--yes", is_flag=True, help="Do not ask after showing the plan.")
@click.option(
    "--force",
    is_flag=True,
    help="Adopt although the inventory's backend differs from the v2 config's, then switch it.",
)
@click.option(
    "--drop-stale",
    is_flag=True,
    help="Leave out v2 leases of addresses that are no inventory host.",
)
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@etcd_timeout_option
def adopt(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    yes: bool,
    force: bool,
    drop_stale: bool,
    break_lock: bool,
    etcd_timeout: float,
) -> Outcome:
    """Take over a cluster built by hand (etcd in http with v2, flanneld, docker --bip),
    keeping every subnet, container address and etcd member; then as init."""
    inv = load(inventory)
    options = AdoptOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                           break_lock=break_lock, force=force, drop_stale=drop_stale,
                           etcd_timeout=etcd_timeout)  # fmt: skip

    def confirm(plan: AdoptPlan) -> None:
        # On stderr: stdout may be reserved for the JSON document. Declining raises click.Abort
        # ("aborted, nothing changed", exit 1): only facts were read so far.
        click.echo(printable("\n".join(f"adopt: {line}" for line in plan.lines())), err=True)
        if not yes:
            click.confirm(f"Adopt cluster {inv.cluster.name} as planned above?", abort=True,
                          err=True)  # fmt: skip

    report, adoption = RolloutReport(), Adoption()
    with run_session(inv, "adopt", options, lock=True) as run:
        run_adopt(run.session, options, report, adoption, confirm)
    outcome = summary(run, "adopt", report)
    outcome.doc["adoption"] = adoption.doc()
    return outcome
