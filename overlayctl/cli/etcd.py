"""`overlayctl etcd snapshot save|restore`, `overlayctl certs rotate` and `certs revoke`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from overlayctl.actions import certs as certs_action
from overlayctl.actions import snapshot as etcd_snapshot
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    etcd_timeout_option,
    inventory_option,
    load,
    output_option,
    run_session,
)
from overlayctl.cli.init import run_and_report, summary
from overlayctl.inventory.load import state_dir
from overlayctl.phases.base import RolloutOptions
from overlayctl.remote.session import RunOptions


@click.group()
def etcd() -> None:
    """etcd maintenance: snapshots."""


@etcd.group()
def snapshot() -> None:
    """Back up etcd to a file, or rebuild the cluster from one."""


@snapshot.command()
@inventory_option
@connection_options
@output_option("table")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: the cluster state folder, timestamped).",
)
def save(inventory: Path, accept_new_host_keys: bool, parallel: int, out: Path | None) -> Outcome:
    """Take a snapshot on a healthy member and copy it here (0600)."""
    inv = load(inventory)
    target = out or state_dir(inv) / "snapshots" / f"etcd-{time.strftime('%Y%m%d-%H%M%S')}.db"
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    size = None
    with run_session(inv, "snapshot", options, lock=False) as run:
        size = etcd_snapshot.save(run.session, target)
    doc = {"file": str(target) if size is not None else None, "bytes": size}
    return run.ended("", doc, "snapshot")


@snapshot.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("--yes", is_flag=True, help="Do not ask first.")
@etcd_timeout_option
@click.argument("snapshot_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    yes: bool,
    etcd_timeout: float,
    snapshot_file: Path,
) -> Outcome:
    """Replace every member's data with SNAPSHOT_FILE and start the cluster again."""
    inv = load(inventory)
    if not yes:
        click.confirm(f"Replace etcd's data on {len(inv.etcd_members)} members with "
                      f"{snapshot_file}?", abort=True, err=True)  # fmt: skip
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with run_session(inv, "restore", options, lock=True) as run:
        etcd_snapshot.restore(run.session, snapshot_file, etcd_timeout)
    doc = {"snapshot": str(snapshot_file), "members": [m.name for m in inv.etcd_members]}
    return run.ended("", doc, "restore")


@click.group()
def certs() -> None:
    """The cluster's certificates."""


@certs.command()
@inventory_option
@connection_options
@output_option("table")
@click.option(
    "--new-ca",
    is_flag=True,
    help="Replace the CA itself, in three rolling rounds; resumes a replacement that stopped.",
)
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@etcd_timeout_option
def rotate(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    new_ca: bool,
    break_lock: bool,
    etcd_timeout: float,
) -> Outcome:
    """New member and client certificates from the same CA, pushed without downtime.

    etcd members restart one at a time (quorum kept), agents restart (the data plane stays up).
    With --new-ca, a new CA replaces the old one in three rounds, each on every host before the
    next: hosts trust both CAs, every certificate is signed by the new one, hosts trust only it.
    """
    inv = load(inventory)
    options = RolloutOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                             break_lock=break_lock, etcd_timeout=etcd_timeout)  # fmt: skip
    if not new_ca:
        return run_and_report(inv, "rotate", options)
    certs_action.require_tls(inv)
    report = certs_action.CaReport()
    with run_session(inv, "replace-ca", options, lock=True) as run:
        certs_action.replace_ca(run.session, options, report)
    outcome = summary(run, "certs rotate --new-ca", report)
    outcome.doc["ca"] = report.ca_doc()
    return outcome


@certs.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("--break-lock", is_flag=True, help="Remove a lock left on hosts by a dead run.")
@click.argument("host")
def revoke(inventory: Path, accept_new_host_keys: bool, parallel: int, break_lock: bool,
           host: str) -> Outcome:  # fmt: skip
    """Take HOST's etcd identity away at once: its user, certificate and password.

    HOST's etcd user is deleted (its agent's next etcd call is refused), its password and
    certificate leave the state folder, and the revocation is recorded. A HOST still in the
    inventory gets a new identity from the next `init`: take it out (or `reset` it) first.
    """
    inv = load(inventory)
    certs_action.check_revoke(inv, host)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                         break_lock=break_lock)  # fmt: skip
    report = certs_action.Revocation(host)
    # Only the members are reached (and locked): HOST itself may be gone for good.
    members = dataclasses.replace(inv, hosts=inv.etcd_members)
    with run_session(members, "revoke", options, lock=True) as run:
        certs_action.revoke(run.session, inv, host, report)
    deleted = {True: "etcd user deleted", False: "no etcd user (already gone)", None: "not reached"}
    lines = [f"{host:<12} revoke    {deleted[report.user_deleted]}; removed "
             f"{', '.join(report.files_removed) or 'nothing'} from the state folder"]  # fmt: skip
    lines += [f"{host:<12} revoke    {w}" for w in report.warnings]
    return run.ended("\n".join(lines), report.doc(), "revoke")
