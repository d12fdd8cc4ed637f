"""Options shared by the commands that read an inventory, and the session they open."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from overlayctl.inventory import check_local_files, load_inventory
from overlayctl.inventory_model import Inventory
from overlayctl.session import Reporter, RunOptions, Session, state_dir

F = Callable[..., Any]


def inventory_option(fn: F) -> F:
    return click.option(
        "-i", "--inventory",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="OVERLAYCTL_INVENTORY", default="cluster.yaml",
        show_default=True, show_envvar=True, help="The inventory file.",
    )(fn)  # fmt: skip


def output_option(fn: F) -> F:
    return click.option(
        "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
    )(fn)


def connection_options(fn: F) -> F:
    for decorator in reversed((
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Record keys of hosts not yet in known_hosts (never changed keys)."),
        click.option("--parallel", type=click.IntRange(1, 256), default=10, show_default=True,
                     help="Hosts worked on at once."),
    )):  # fmt: skip
        fn = decorator(fn)
    return fn


def load(inventory: Path, local_files: bool = True) -> Inventory:
    """Validate the inventory (and the SSH files it names) before any host is touched."""
    inv, warnings = load_inventory(inventory)
    if local_files:
        warnings += check_local_files(inv)
    for warning in warnings:
        click.echo(f"overlayctl: warning: {warning}", err=True)
    return inv


def open_session(inv: Inventory, command: str, options: RunOptions, lock: bool) -> Session:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = state_dir(inv) / "logs" / f"{command}-{stamp}.log"
    reporter = Reporter(log, echo=click.echo)
    reporter.log(f"overlayctl {command} on {len(inv.hosts)} hosts")
    return Session(inv, reporter, options, command=f"overlayctl {command}", lock=lock)
