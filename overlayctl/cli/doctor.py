"""`overlayctl doctor`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.doctor import run_doctor
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    inventory_option,
    load,
    open_session,
    output_option,
)
from overlayctl.doctor.report import doctor_doc, doctor_text
from overlayctl.doctor.selection import select
from overlayctl.errors import ExitCode, OverlayctlError
from overlayctl.remote.session import RunOptions


def _pair(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if len(names) != 2 or not all(names):
        raise OverlayctlError(f"doctor: --pair takes two hosts as A,B, got {value!r}",
                              ExitCode.BAD_INPUT)  # fmt: skip
    return names[0], names[1]


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("--pair", metavar="A,B", callback=_pair, help="Only these two hosts, both ways.")
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
def doctor(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    pair: tuple[str, str] | None,
    hosts: tuple[str, ...],
) -> Outcome:
    """Find where the overlay's packets die, and say how to fix it. Read-only.

    Checks every node host (or HOST...) and every pair of them: underlay, firewall, forwarding,
    mtu, routes, bridge, agent, lease, checksum, rp_filter, etcd. Exit 1 on any error finding."""
    inv = load(inventory)
    names, pairs = select(inv, hosts, pair)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "doctor", options, lock=False) as session:
        report = run_doctor(session, names, pairs)
        session.reporter.close()
    probed = len(pairs) if report.hosts else 0
    return Outcome(doctor_text(report, probed), doctor_doc(report, probed), ok=report.ok,
                   errors=report.errors)  # fmt: skip
