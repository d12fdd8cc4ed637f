"""`overlayctl inventory from-vagrant`: an inventory for the VMs of the Vagrantfile here."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from overlayctl import vagrant
from overlayctl.cli.common import Outcome, json_mode, output_option
from overlayctl.errors import BadInput, Conflict, EnvironmentProblem, OverlayctlError
from overlayctl.inventory import parse_inventory
from overlayctl.inventory.model import BACKEND_OPTIONS
from overlayctl.text import plural

_TIMEOUT = 120.0


@click.group()
def inventory() -> None:
    """Write inventories from what already exists (Vagrant VMs)."""


def _default_key() -> Path:
    """The private half of the key the Vagrantfile authorised (OVERLAYCTL_PUBKEY)."""
    pub = os.environ.get("OVERLAYCTL_PUBKEY", "~/.ssh/id_ed25519.pub")
    return Path(pub.removesuffix(".pub")).expanduser().absolute()


@inventory.command("from-vagrant")
@click.option(
    "--ssh-config",
    "ssh_config",
    type=click.File("r"),
    default=None,
    help="Recorded `vagrant ssh-config` output ('-': stdin). Default: run it here.",
)
@click.option(
    "--probe",
    "probe_file",
    type=click.File("r"),
    default=None,
    help="Recorded probe output, each VM after a line '==> NAME <=='. Default: "
    "probe every VM over its ssh-config entry.",
)
@click.option(
    "--underlay",
    default=str(vagrant.DEFAULT_UNDERLAY),
    show_default=True,
    help="The Vagrantfile's private network; each VM's one address inside it is used.",
)
@output_option("table")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="cluster.yaml",
    show_default=True,
    help="Inventory to write ('-': stdout). (-o is the output format, as on every command.)",
)
@click.option("--force", is_flag=True, help="Replace an existing inventory file.")
@click.option("--name", default="vagrant", show_default=True, help="cluster.name")
@click.option(
    "--network",
    default="172.21.0.0/16",
    show_default=True,
    help="cluster.network, the overlay Network (the seed's).",
)
@click.option(
    "--backend",
    type=click.Choice(sorted(BACKEND_OPTIONS)),
    default="vxlan",
    show_default=True,
    help="cluster.backend",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ssh.key. Default: $OVERLAYCTL_PUBKEY without .pub, else ~/.ssh/id_ed25519.",
)
@click.option(
    "--known-hosts",
    "known_hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ssh.known_hosts. Default: known_hosts beside the inventory.",
)
@click.option(
    "--host-keys/--no-host-keys",
    default=True,
    show_default=True,
    help="Write the host keys the probe read into known_hosts.",
)
def from_vagrant(
    ssh_config: click.utils.LazyFile | None,
    probe_file: click.utils.LazyFile | None,
    underlay: str,
    out: Path,
    force: bool,
    name: str,
    network: str,
    backend: str,
    key: Path | None,
    known_hosts: Path | None,
    host_keys: bool,
) -> Outcome:
    """Write an inventory for the running VMs of the Vagrantfile in this folder.

    \b
    How each VM's address is found: overlayctl asks the VM itself. Over the connection
    `vagrant ssh-config` describes (Vagrant's own channel, like `vagrant ssh`) it runs
      cat /etc/os-release; ip -o -4 addr show; cat /etc/ssh/ssh_host_*_key.pub
    and takes the VM's one IPv4 address inside --underlay. The NAT address (VirtualBox:
    10.0.2.15 on every VM, flannel #98) and the address Vagrant's SSH goes to are never
    used; each line printed names what was skipped. To review that input first, record it
    and pass it with --probe:
      for vm in node1 node2 node3; do echo "==> $vm <=="; vagrant ssh $vm -c \\
        'cat /etc/os-release; ip -o -4 addr show; cat /etc/ssh/ssh_host_*_key.pub'; done
    \b
    SSH in the inventory goes to that private address as root with --key (the Vagrantfile
    authorises its public half), checked strictly against --known-hosts. Vagrant's
    `StrictHostKeyChecking no` is not copied: the host keys read by the probe are written to
    --known-hosts (lines for these addresses are replaced, others kept), so `overlayctl init`
    needs no --accept-new-host-keys. With --no-host-keys, known_hosts is left alone.
    """
    if str(out) == "-" and json_mode():
        raise BadInput("--out -: the inventory would share stdout with -o json; name a file")
    try:
        under = ipaddress.IPv4Network(underlay)
    except ValueError as exc:
        raise BadInput(f"--underlay: {exc}") from None
    if _is_stdin(ssh_config) and _is_stdin(probe_file):
        raise BadInput("--ssh-config and --probe cannot both read stdin")
    if str(out) != "-" and out.exists() and not force:
        raise Conflict(f"{out} exists; pass --force to replace it")
    config_text = ssh_config.read() if ssh_config is not None else _run(["vagrant", "ssh-config"])
    entries = vagrant.parse_ssh_config(config_text)
    if probe_file is not None:
        raw = vagrant.split_probes(probe_file.read())
    else:
        raw = _probe_live(config_text, entries)
    machines = vagrant.vms(entries, {n: vagrant.parse_probe(t) for n, t in raw.items()}, under)

    base = Path.cwd() if str(out) == "-" else out.absolute().parent
    # Paths given on the command line are taken from here; the default sits beside the inventory.
    known = known_hosts.expanduser().absolute() if known_hosts else Path("known_hosts")
    data = vagrant.inventory_data(
        machines, name=name, network=network, backend=backend,
        key=(key or _default_key()).expanduser().absolute(), known_hosts=known,
    )  # fmt: skip
    try:
        parse_inventory(data, base_dir=base)  # the same checks `init` makes, before writing
    except BadInput as exc:
        raise BadInput(f"the inventory would not be valid: {exc}") from None
    for vm in machines:
        note = f"; skipped {', '.join(vm.skipped)}" if vm.skipped else ""
        click.echo(f"{vm.name:<12} {vm.address} on {vm.iface} ({vm.family or 'os unknown'}){note}",
                   err=True)  # fmt: skip
    text = _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        out.write_text(text)
        click.echo(f"from-vagrant: wrote {out} ({plural(len(machines), 'host')})", err=True)
    known_path = known if known.is_absolute() else base / known
    wrote_keys = host_keys and _write_known_hosts(known_path, machines)
    doc = {
        "out": str(out),
        "known_hosts": str(known_path) if wrote_keys else None,
        "hosts": [{"name": vm.name, "address": str(vm.address), "iface": vm.iface,
                   "os": vm.family, "skipped": list(vm.skipped)} for vm in machines],
    }  # fmt: skip
    return Outcome("", doc)


_HEADER = (
    "# Written by `overlayctl inventory from-vagrant`: each VM's address is the one it has on\n"
    "# the private network (never the NAT address); SSH goes there, host keys checked strictly.\n"
)


def _is_stdin(stream: object) -> bool:
    return getattr(stream, "name", None) in ("-", "<stdin>")


def _write_known_hosts(path: Path, machines: list[vagrant.Vm]) -> bool:
    """The probed host keys into PATH; False when the probe read none."""
    if not any(vm.host_keys for vm in machines):
        click.echo(f"from-vagrant: the probe read no host keys; {path} left alone "
                   "(use `overlayctl init --accept-new-host-keys`)", err=True)  # fmt: skip
        return False
    old = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(vagrant.merge_known_hosts(old, machines))
    count = sum(len(vm.host_keys) for vm in machines)
    click.echo(f"from-vagrant: {plural(count, 'host key')} for {plural(len(machines), 'host')} "
               f"in {path}", err=True)  # fmt: skip
    return True


def _run(argv: list[str], stdin: str | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(f"{argv[0]} not found; run this where the VMs were made, or "
                                 "pass recorded output (--ssh-config, --probe)")  # fmt: skip
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise OverlayctlError(f"`{' '.join(argv)}` did not finish in {_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OverlayctlError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {last}")
    return done.stdout


def _probe_live(config_text: str, entries: list[vagrant.SshEntry]) -> dict[str, str]:
    """PROBE_COMMAND on every VM over the connection `vagrant ssh-config` describes."""
    with tempfile.TemporaryDirectory(prefix="overlayctl-vagrant-") as tmp:
        config = Path(tmp) / "ssh-config"
        config.write_text(config_text)
        return {
            e.name: _run(
                ["ssh", "-F", str(config), "-o", "BatchMode=yes", e.name, vagrant.PROBE_COMMAND]
            )
            for e in entries
        }
