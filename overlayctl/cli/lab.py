"""`overlayctl lab ...`: emulated hosts on this machine. Parses options, calls overlayctl.lab."""

from __future__ import annotations

import json
import sys
import time

import click
from tabulate import tabulate

from overlayctl.lab import labs, state, template

_NAME = click.option("--name", "-n", default="demo", show_default=True, help="Lab name.")


@click.group()
def lab() -> None:
    """Emulated Debian hosts (systemd, sshd, docker, etcd) on this machine. Needs root."""


@lab.command("template")
@click.option("--rebuild", is_flag=True, help="Build again even when the cached one is current.")
def template_(rebuild: bool) -> None:
    """Build (once) the template root filesystem every lab host starts from."""
    started = time.monotonic()
    tpl = template.find_template() if not rebuild else None
    if tpl is None:
        click.echo("lab: building the template rootfs with debootstrap (about 2 minutes)")
        tpl = template.build_template(force=rebuild)
    click.echo(
        f"lab: template {tpl.key} ready at {tpl.rootfs} ({time.monotonic() - started:.1f} s)"
    )


@lab.command()
@_NAME
@click.option("--hosts", "host_count", type=int, default=3, show_default=True)
@click.option(
    "--subnet",
    default="192.168.255.0/24",
    show_default=True,
    help="Lab LAN; hosts start at .154 like the seed runbook, the workstation is .10.",
)
def up(name: str, host_count: int, subnet: str) -> None:
    """Boot HOSTS full hosts (node1..nodeN) and a workstation namespace on one LAN."""
    lab_state = labs.up(name, host_count, subnet, progress=click.echo)
    click.echo(f"inventory: {lab_state.inventory}")
    click.echo(f"ssh key:   {lab_state.ssh_key}  known_hosts: {lab_state.known_hosts}")
    click.echo(f"workstation shell: overlayctl lab shell --name {name}")
    click.echo(f"run on a host:     overlayctl lab exec --name {name} node1 -- systemctl status")


@lab.command()
@_NAME
def down(name: str) -> None:
    """Remove a lab: processes, mounts, namespaces, cgroups, files."""
    if not labs.down(name, progress=click.echo):
        click.echo(f"lab: no lab named {name!r}; nothing to do")


@lab.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def list_(output: str) -> None:
    """Show labs with their host count and state."""
    rows = [labs.describe(lab_state) for lab_state in state.all_labs()]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(tabulate(rows, headers="keys"))
    else:
        click.echo("no labs")


@lab.command()
@_NAME
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def health(name: str, output: str) -> None:
    """SSH and systemd state of every host of a lab."""
    lab_state = labs.existing(name)
    rows = [h.__dict__ for h in labs.health(lab_state)]
    click.echo(json.dumps(rows, indent=2) if output == "json" else tabulate(rows, headers="keys"))
    if any(r["system_state"] not in ("running", "degraded") for r in rows):
        sys.exit(1)


@lab.command()
@_NAME
@click.argument("host")
def reboot(name: str, host: str) -> None:
    """Power HOST off and boot it again, as a reboot would."""
    labs.restart_host(name, host, progress=click.echo)


@lab.command(context_settings={"ignore_unknown_options": True})
@_NAME
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def shell(name: str, command: tuple[str, ...]) -> None:
    """A shell (or COMMAND) in the lab's workstation namespace, with OVERLAYCTL_INVENTORY set."""
    labs.shell(name, list(command) or None)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@_NAME
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on HOST over SSH from the workstation (strict host keys)."""
    sys.exit(labs.exec_on_host(name, host, list(command)))
