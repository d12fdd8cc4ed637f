"""`overlayctl init` and `overlayctl plan`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from overlayctl.cli.common import (
    Outcome,
    Run,
    connection_options,
    etcd_timeout_option,
    inventory_option,
    load,
    output_option,
    report_doc,
    run_session,
)
from overlayctl.init import (
    InitOptions,
    InitReport,
    current_config_change,
    ensure_pki,
    gather_plans,
    run_init,
)
from overlayctl.inventory.model import Inventory
from overlayctl.output import plan_doc, plan_text, plural
from overlayctl.plan.config_change import (
    ConfigChange,
    add_config_change,
    refuse_fixed_changes,
)


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option(
    "--restart-network",
    is_flag=True,
    help="Apply a changed static-IP file now (may drop the SSH connection).",
)
@click.option("--force", is_flag=True, help="Replace a different network config in etcd.")
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@etcd_timeout_option
def init(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    restart_network: bool,
    force: bool,
    break_lock: bool,
    etcd_timeout: float,
) -> Outcome:
    """Prepare every host, form the etcd cluster (TLS) and write the network config."""
    inv = load(inventory)
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          break_lock=break_lock, restart_network=restart_network, force=force,
                          etcd_timeout=etcd_timeout)  # fmt: skip
    return run_and_report(inv, "init", options)


def run_and_report(inv: Inventory, command: str, options: InitOptions) -> Outcome:
    """init and `certs rotate`: run every phase, then one summary line and the document."""
    report = InitReport()
    with run_session(inv, command, options, lock=True) as run:
        run_init(run.session, options, report)
    return summary(run, "certs rotate" if command == "rotate" else command, report)


def summary(run: Run, command: str, report: InitReport) -> Outcome:
    """`init: 79 changes on 3 hosts in 10.0 s; 0 hosts failed; log: ...` and its document."""
    log = run.session.reporter.log_path
    failed = len(run.session.failures)
    text = (
        f"{command}: {plural(report.total_changes, 'change')} on "
        f"{plural(len(report.plans), 'host')} in {report.seconds:.1f} s; "
        f"{plural(failed, 'host')} failed; log: {log}"
    )
    return run.ended(text, report_doc(report, log), command)


@click.command()
@inventory_option
@connection_options
@output_option("diff")
def plan(inventory: Path, accept_new_host_keys: bool, parallel: int) -> Outcome:
    """Show, per host, the diff of every file and each action init would make.

    Changes nothing, on the hosts or here: no PKI, no log, no state folder is written (the
    certificates a first `init` would make are made in memory and listed)."""
    inv = load(inventory)
    # --accept-new-host-keys: trusted for this run, recorded by `init` only (plan writes nothing).
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          record_host_keys=False)  # fmt: skip
    plans = {}
    change: ConfigChange | None = None
    with (
        run_session(inv, "plan", options, lock=False, log=False) as run,
        tempfile.TemporaryDirectory(prefix="overlayctl-plan-") as wheels,
    ):
        session = run.session
        session.open()
        pki = ensure_pki(inv, session, write=False)
        plans = gather_plans(session, pki, restart_network=False, wheels_dir=Path(wheels))
        change = current_config_change(session)
        refuse_fixed_changes(change, plans, session.inv)
        if change is not None:
            add_config_change(plans, session.inv, change)
    note = f"{change.describe()} (init --force)" if change else ""
    config = vars(change) | {"describe": change.describe()} if change else None
    return run.ended(plan_text(plans, note), plan_doc(plans, config), "plan")
