"""`overlayctl verify`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.verify import VerifyOptions, run_verify
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    error_entry,
    inventory_option,
    load,
    open_session,
    output_option,
)
from overlayctl.output import verify_doc, verify_text
from overlayctl.remote.session import RunOptions


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option(
    "--image",
    default="busybox",
    show_default=True,
    help="Image of the test containers; never pulled.",
)
@click.option(
    "--import-from",
    metavar="PATH",
    help="A tar on the hosts to `docker import` as --image when it is absent.",
)
def verify(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    image: str,
    import_from: str | None,
) -> Outcome:
    """One container per host; every container pings every other (and with DF at the MTU)."""
    inv = load(inventory)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "verify", options, lock=False) as session:
        report = run_verify(session, VerifyOptions(image=image, import_from=import_from))
        session.reporter.close()
    errors = [error_entry(why, host) for host, why in report.hosts_failed.items()]
    errors += [error_entry(f"to {p.dst}: {p.error or 'DF ping at the MTU failed'}", p.src, "ping")
               for p in report.pairs if not (p.ok and p.mtu_ok)]  # fmt: skip
    return Outcome(verify_text(report), verify_doc(report), ok=report.ok, errors=errors)
