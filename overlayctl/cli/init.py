"""`overlayctl init` and `overlayctl plan`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from overlayctl.cli.common import connection_options, inventory_option, load, open_session
from overlayctl.errors import ExitCode
from overlayctl.init import InitOptions, ensure_pki, gather_plans, run_init
from overlayctl.output import plan_json, plan_text


@click.command()
@inventory_option
@connection_options
@click.option(
    "--restart-network",
    is_flag=True,
    help="Apply a changed static-IP file now (may drop the SSH connection).",
)
@click.option("--force", is_flag=True, help="Replace a different network config in etcd.")
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@click.option(
    "--etcd-timeout",
    type=float,
    default=90.0,
    show_default=True,
    help="Seconds to wait for every etcd member to be healthy.",
)
def init(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    restart_network: bool,
    force: bool,
    break_lock: bool,
    etcd_timeout: float,
) -> None:
    """Prepare every host, form the etcd cluster (TLS) and write the network config."""
    inv = load(inventory)
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          break_lock=break_lock, restart_network=restart_network, force=force,
                          etcd_timeout=etcd_timeout)  # fmt: skip
    with open_session(inv, "init", options, lock=True) as session:
        try:
            report = run_init(session, options)
        finally:
            session.reporter.close()
        failed = len(session.failures)
        click.echo(
            f"init: {report.total_changes} changes on {len(report.plans)} hosts in "
            f"{report.seconds:.1f} s; {failed} host{'s' * (failed != 1)} failed; "
            f"log: {session.reporter.log_path}"
        )
    if session.failures:
        sys.exit(ExitCode.FAILED)


@click.command()
@inventory_option
@connection_options
@click.option(
    "-o", "--output", type=click.Choice(["diff", "json"]), default="diff", show_default=True
)
def plan(inventory: Path, accept_new_host_keys: bool, parallel: int, output: str) -> None:
    """Show, per host, the diff of every file and each action init would make. Changes nothing."""
    inv = load(inventory)
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "plan", options, lock=False) as session:
        session.open()
        plans = gather_plans(session, ensure_pki(inv, session), restart_network=False)
        session.reporter.close()
    click.echo(plan_json(plans) if output == "json" else plan_text(plans))
    if session.failures:
        sys.exit(ExitCode.FAILED)
