"""`overlayctl lab ...`: emulated hosts on this machine. Parses options, calls overlayctl.lab."""

from __future__ import annotations

import sys
import time

import click
from tabulate import tabulate

from overlayctl.cli.common import Outcome, error_entry, output_option, progress
from overlayctl.lab import box as vagrant_box
from overlayctl.lab import labs, state, template

_NAME = click.option("--name", "-n", default="demo", show_default=True, help="Lab name.")


@click.group()
def lab() -> None:
    """Emulated Debian hosts (systemd, sshd, docker, etcd) on this machine. Needs root."""


@lab.command("template")
@output_option("table")
@click.option("--rebuild", is_flag=True, help="Build again even when the cached one is current.")
def template_(rebuild: bool) -> Outcome:
    """Build (once) the template root filesystem every lab host starts from."""
    started = time.monotonic()
    tpl = template.find_template() if not rebuild else None
    if tpl is None:
        progress("lab: building the template rootfs with debootstrap (about 2 minutes)")
        tpl = template.build_template(force=rebuild)
    took = time.monotonic() - started
    text = f"lab: template {tpl.key} ready at {tpl.rootfs} ({took:.1f} s)"
    return Outcome(text, {"key": tpl.key, "rootfs": str(tpl.rootfs), "seconds": round(took, 2)})


@lab.command("box")
@output_option("table")
@click.option("--rebuild", is_flag=True, help="Build again even when the cached one is current.")
def box_(rebuild: bool) -> Outcome:
    """Build (once) the Vagrant libvirt box of Debian bookworm the VM tests boot.

    Cached under /var/cache/overlayctl/box by its recipe (OVERLAYCTL_BOX_CACHE): rebuilt only
    when the recipe changes. Add it with `vagrant box add --name NAME FILE` (both printed).
    """
    started = time.monotonic()
    found = vagrant_box.find_box() if not rebuild else None
    built = found is None
    if found is None:
        progress("lab: building the Vagrant box with debootstrap (about 3 minutes)")
        found = vagrant_box.build_box(force=rebuild)
    took = time.monotonic() - started
    how = "built" if built else "cached"
    text = f"lab: box {found.name} ({how}) ready at {found.file} ({took:.1f} s)"
    doc = {"key": found.key, "name": found.name, "file": str(found.file),
           "built": built, "seconds": round(took, 2),
           "build_seconds": found.build_seconds}  # fmt: skip
    return Outcome(text, doc)


@lab.command()
@_NAME
@output_option("table")
@click.option("--hosts", "host_count", type=int, default=3, show_default=True,
              help="How many hosts (node1..nodeN), 1 to 64.")  # fmt: skip
@click.option(
    "--subnet",
    default="192.168.255.0/24",
    show_default=True,
    help="Lab LAN; hosts start at .154 like the seed runbook, the workstation is .10.",
)
def up(name: str, host_count: int, subnet: str) -> Outcome:
    """Boot HOSTS full hosts (node1..nodeN) and a workstation namespace on one LAN."""
    lab_state = labs.up(name, host_count, subnet, progress=progress)
    text = "\n".join([
        f"inventory: {lab_state.inventory}",
        f"ssh key:   {lab_state.ssh_key}  known_hosts: {lab_state.known_hosts}",
        f"workstation shell: overlayctl lab shell --name {name}",
        f"run on a host:     overlayctl lab exec --name {name} node1 -- systemctl status",
    ])  # fmt: skip
    return Outcome(text, labs.describe(lab_state))


@lab.command()
@_NAME
@output_option("table")
def down(name: str) -> Outcome:
    """Remove a lab: processes, mounts, namespaces, cgroups, files."""
    removed = labs.down(name, progress=progress)
    text = "" if removed else f"lab: no lab named {name!r}; nothing to do"
    return Outcome(text, {"name": name, "removed": removed})


@lab.command("list")
@output_option("table")
def list_() -> Outcome:
    """Show labs with their host count and state."""
    rows = [labs.describe(lab_state) for lab_state in state.all_labs()]
    return Outcome(tabulate(rows, headers="keys") if rows else "no labs", {"labs": rows})


@lab.command()
@_NAME
@output_option("table")
def health(name: str) -> Outcome:
    """SSH and systemd state of every host of a lab. Exit 1 unless each is running/degraded."""
    lab_state = labs.existing(name)
    rows = [h.__dict__ for h in labs.health(lab_state)]
    sick = [r for r in rows if r["system_state"] not in ("running", "degraded")]
    errors = [error_entry(f"systemd {r['system_state'] or 'unknown'}", r["name"]) for r in sick]
    return Outcome(tabulate(rows, headers="keys"), {"hosts": rows}, ok=not sick, errors=errors)


@lab.command()
@_NAME
@click.argument("host")
@output_option("table")
def reboot(name: str, host: str) -> Outcome:
    """Power HOST off and boot it again, as a reboot would."""
    back = labs.restart_host(name, host, progress=progress)
    return Outcome(f"lab: {host} is back ({back.system_state})", {"host": back.__dict__})


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
