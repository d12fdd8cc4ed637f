"""`overlayctl etcd snapshot save|restore` and `overlayctl certs rotate`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from overlayctl import etcd_snapshot
from overlayctl.cli.common import connection_options, inventory_option, load, open_session
from overlayctl.errors import ExitCode
from overlayctl.init import InitOptions, run_init
from overlayctl.session import RunOptions, state_dir


@click.group()
def etcd() -> None:
    """etcd maintenance: snapshots."""


@etcd.group()
def snapshot() -> None:
    """Back up etcd to a file, or rebuild the cluster from one."""


@snapshot.command()
@inventory_option
@connection_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: the cluster state folder, timestamped).",
)
def save(inventory: Path, accept_new_host_keys: bool, parallel: int, out: Path | None) -> None:
    """Take a snapshot on a healthy member and copy it here (0600)."""
    inv = load(inventory)
    target = out or state_dir(inv) / "snapshots" / f"etcd-{time.strftime('%Y%m%d-%H%M%S')}.db"
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "snapshot", options, lock=False) as session:
        etcd_snapshot.save(session, target)
        session.reporter.close()


@snapshot.command()
@inventory_option
@connection_options
@click.option("--yes", is_flag=True, help="Do not ask first.")
@click.option("--etcd-timeout", type=float, default=90.0, show_default=True)
@click.argument("snapshot_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    yes: bool,
    etcd_timeout: float,
    snapshot_file: Path,
) -> None:
    """Replace every member's data with SNAPSHOT_FILE and start the cluster again."""
    inv = load(inventory)
    if not yes:
        click.confirm(f"Replace etcd's data on {len(inv.etcd_members)} members with "
                      f"{snapshot_file}?", abort=True)  # fmt: skip
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "restore", options, lock=True) as session:
        try:
            etcd_snapshot.restore(session, snapshot_file, etcd_timeout)
        finally:
            session.reporter.close()


@click.group()
def certs() -> None:
    """The cluster's certificates."""


@certs.command()
@inventory_option
@connection_options
@click.option("--etcd-timeout", type=float, default=90.0, show_default=True)
def rotate(inventory: Path, accept_new_host_keys: bool, parallel: int, etcd_timeout: float) -> None:
    """New member and client certificates from the same CA, pushed without downtime.

    etcd members restart one at a time (quorum kept), agents restart (the data plane stays up).
    """
    inv = load(inventory)
    options = InitOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          etcd_timeout=etcd_timeout, renew_certificates=True)  # fmt: skip
    with open_session(inv, "rotate", options, lock=True) as session:
        try:
            report = run_init(session, options)
        finally:
            session.reporter.close()
        click.echo(f"certs rotate: {report.total_changes} changes in {report.seconds:.1f} s")
    if session.failures:
        sys.exit(ExitCode.FAILED)
