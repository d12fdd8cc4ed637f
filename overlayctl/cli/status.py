"""`overlayctl status`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from overlayctl import etcdctl
from overlayctl.cli.common import (
    connection_options,
    inventory_option,
    load,
    open_session,
    output_option,
)
from overlayctl.errors import ExitCode
from overlayctl.output import status_doc, status_text
from overlayctl.session import RunOptions
from overlayctl.status import cluster_status


@click.command()
@inventory_option
@connection_options
@output_option
@click.option("-v", "--verbose", is_flag=True, help="Also print the etcdctl commands to run.")
def status(
    inventory: Path, accept_new_host_keys: bool, parallel: int, output: str, verbose: bool
) -> None:
    """etcd members and health, the network config, leases, and each host's agent and docker.

    Exit 1 when anything is unhealthy."""
    inv = load(inventory)
    options = RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel)
    with open_session(inv, "status", options, lock=False) as session:
        result, hosts = cluster_status(session)
        session.reporter.close()
    if output == "json":
        click.echo(json.dumps(status_doc(result, hosts), indent=2))
    else:
        click.echo(status_text(result, hosts))
    if verbose:
        click.echo("\nOn any member, as root:")
        for args in (("endpoint", "health"), ("member", "list", "-w", "table")):
            click.echo("  " + etcdctl.operator_command(inv, *args))
    if not result.healthy or session.failures or not all(h.healthy for h in hosts):
        sys.exit(ExitCode.FAILED)
