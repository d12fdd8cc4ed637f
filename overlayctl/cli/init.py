"""`overlayctl init` and `overlayctl plan`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from overlayctl.actions import certs
from overlayctl.actions.adopt import preview
from overlayctl.actions.init import run_init, run_plan
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
from overlayctl.inventory.model import Inventory
from overlayctl.output import adoption_doc, adoption_text, plan_doc, plan_text
from overlayctl.phases.base import Rollout, RolloutOptions, RolloutReport
from overlayctl.text import plural, printable


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
    options = RolloutOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                             break_lock=break_lock, restart_network=restart_network, force=force,
                             etcd_timeout=etcd_timeout)  # fmt: skip
    return run_and_report(inv, "init", options)


def run_and_report(inv: Inventory, command: str, options: RolloutOptions) -> Outcome:
    """init and `certs rotate`: run every phase, then one summary line and the document."""
    report = RolloutReport()
    run_all = certs.rotate if command == "rotate" else run_init
    with run_session(inv, command, options, lock=True) as run:
        run_all(run.session, options, report)
    return summary(run, "certs rotate" if command == "rotate" else command, report)


def summary(run: Run, command: str, report: RolloutReport) -> Outcome:
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
    options = RolloutOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                             record_host_keys=False)  # fmt: skip
    found, adopting = None, None
    with (
        run_session(inv, "plan", options, lock=False, log=False) as run,
        tempfile.TemporaryDirectory(prefix="overlayctl-plan-") as wheels,
    ):
        rollout = Rollout(run.session, options)
        run_plan(rollout, Path(wheels))
        found = rollout.handbuilt
        adopting = preview(rollout) if found is not None and found.found else None
    plans, change = rollout.report.plans, rollout.change
    note = f"{change.describe()} (init --force)" if change else ""
    config = vars(change) | {"describe": change.describe()} if change else None
    text, adoption = plan_text(plans, note), adoption_doc(found)
    if adoption is not None and adopting is not None:  # init would refuse: adopt takes it over
        steps, refusal = adopting
        lines = [f"=== adopt: would refuse: {refusal}"] if refusal else ["=== adopt would:"]
        lines += [printable(f"--- {line}") for line in steps.lines()]
        text = "\n".join([adoption_text(found), *lines, text])
        adoption |= {"plan": steps.doc(), "adopt_refusal": refusal or None}
    return run.ended(text, plan_doc(plans, config, adoption), "plan")
