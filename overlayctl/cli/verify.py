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
from overlayctl.inventory.load import state_dir
from overlayctl.output import verify_doc, verify_text
from overlayctl.remote.session import RunOptions

SAMPLE_ROUND_FILE = "verify-sample-round"


def _read_round(path: Path) -> int:
    """The sample rotation to run next (0 without a valid record)."""
    try:
        return max(int(path.read_text().strip()), 0)
    except (OSError, ValueError):
        return 0


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
@click.option(
    "--sample",
    type=click.IntRange(1),
    metavar="K",
    help="Each host pings K peers (and its own docker0), not all: for clusters past ~50 hosts. "
    "The peers rotate from run to run so that ceil((N-1)/K) runs cover every pair; the pairs "
    "left out are reported as not tested.",
)
@click.option(
    "--sample-round",
    type=click.IntRange(0),
    metavar="R",
    help="The rotation of --sample to run (default: the one after the last run's, counted in "
    "the state folder's verify-sample-round).",
)
def verify(
    inventory: Path,
    accept_new_host_keys: bool,
    parallel: int,
    image: str,
    import_from: str | None,
    sample: int | None,
    sample_round: int | None,
) -> Outcome:
    """One container per host; every container pings every other (and with DF at the MTU).

    All hosts ping at once: 625 pairs of 25 hosts take about as long as one host's."""
    inv = load(inventory)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    counter = state_dir(inv) / SAMPLE_ROUND_FILE
    if sample is not None and sample_round is None:
        sample_round = _read_round(counter)
    verify_options = VerifyOptions(image=image, import_from=import_from, sample=sample,
                                   sample_round=sample_round or 0)  # fmt: skip
    with open_session(inv, "verify", options, lock=False) as session:
        report = run_verify(session, verify_options)
        session.reporter.close()
    if sample is not None:  # the next run takes the next rotation
        counter.parent.mkdir(parents=True, exist_ok=True)
        counter.write_text(f"{verify_options.sample_round + 1}\n")
    errors = [error_entry(why, host) for host, why in report.hosts_failed.items()]
    errors += [error_entry(f"to {p.dst}: {p.error or 'DF ping at the MTU failed'}", p.src, "ping")
               for p in report.pairs if not (p.ok and p.mtu_ok)]  # fmt: skip
    return Outcome(verify_text(report), verify_doc(report), ok=report.ok, errors=errors)
