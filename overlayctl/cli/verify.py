"""`overlayctl verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from overlayctl.cli.common import (
    connection_options,
    inventory_option,
    load,
    open_session,
    output_option,
)
from overlayctl.errors import ExitCode
from overlayctl.output import verify_doc, verify_text
from overlayctl.session import RunOptions
from overlayctl.verify import VerifyOptions, run_verify


@click.command()
@inventory_option
@connection_options
@output_option
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
    output: str,
    image: str,
    import_from: str | None,
) -> None:
    """One container per host; every container pings every other (and with DF at the MTU)."""
    inv = load(inventory)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "verify", options, lock=False) as session:
        report = run_verify(session, VerifyOptions(image=image, import_from=import_from))
        session.reporter.close()
    click.echo(json.dumps(verify_doc(report), indent=2) if output == "json" else
               verify_text(report))  # fmt: skip
    if not report.ok:
        sys.exit(ExitCode.FAILED)
