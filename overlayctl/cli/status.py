"""`overlayctl status`."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.status import cluster_status
from overlayctl.cli.common import (
    Outcome,
    connection_options,
    error_entry,
    failure_entries,
    inventory_option,
    load,
    open_session,
    output_option,
)
from overlayctl.etcd import etcdctl
from overlayctl.output import status_doc, status_text
from overlayctl.remote.session import RunOptions


@click.command()
@inventory_option
@connection_options
@output_option("table")
@click.option("-v", "--verbose", is_flag=True, help="Also print the etcdctl commands to run.")
def status(inventory: Path, accept_new_host_keys: bool, parallel: int, verbose: bool) -> Outcome:
    """etcd members and health, the network config, leases, and each host's agent and docker.

    Exit 1 when anything is unhealthy."""
    inv = load(inventory)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "status", options, lock=False) as session:
        result, hosts = cluster_status(session)
        session.reporter.close()
    doc = status_doc(result, hosts)
    text = status_text(result, hosts)
    if verbose:
        text += "\n\nOn any member, as root:"
        for args in (("endpoint", "health"), ("member", "list", "-w", "table")):
            text += "\n  " + etcdctl.operator_command(inv, *args)
    errors = failure_entries(session.failures)
    errors += [error_entry(e, phase="etcd") for e in result.errors]
    errors += [error_entry(f"etcd member unhealthy: {m.error or 'no answer'}", m.name, "etcd")
               for m in result.members if not m.healthy]  # fmt: skip
    failed = {f.host for f in session.failures}
    errors += [error_entry(problem, h.name, "host") for h in hosts if h.name not in failed
               for problem in h.problems]  # fmt: skip
    return Outcome(text, doc, ok=doc["healthy"] and not session.failures, errors=errors)
