"""Vagrant VMs -> an overlayctl inventory. Pure: text in, data out (the CLI runs the programs).

Inputs:

- ``vagrant ssh-config``: the VM names and how Vagrant itself reaches each one (VirtualBox:
  HostName 127.0.0.1 and a forwarded port; libvirt: the management address, port 22). That
  channel is never written into the inventory, and neither are its ``StrictHostKeyChecking no``
  and ``UserKnownHostsFile /dev/null``.
- the probe: what each VM says about itself, read over Vagrant's channel: ``/etc/os-release``,
  ``ip -o -4 addr show`` and its SSH host public keys. Raw command output, so an operator can
  record it by hand and read it (see PROBE_COMMAND and split_probes).

The private-network address is the VM's one IPv4 address inside the underlay CIDR (the
Vagrantfile's network), never the NAT address (VirtualBox gives every VM 10.0.2.15: flannel
#98) and never the address Vagrant's own SSH goes to. SSH in the inventory then goes to that
private address as root with the workstation's key (the Vagrantfile authorises it), checked
strictly against known_hosts, which is filled with the host keys the probe read.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlayctl.errors import BadInput
from overlayctl.plan.facts import os_family

# VirtualBox's NAT network: the first interface of every VM, the same address on all of them.
VIRTUALBOX_NAT = ipaddress.IPv4Network("10.0.2.0/24")
DEFAULT_UNDERLAY = ipaddress.IPv4Network("192.168.255.0/24")  # the Vagrantfile's default
PROBE_COMMAND = "cat /etc/os-release; ip -o -4 addr show; cat /etc/ssh/ssh_host_*_key.pub"
_SECTION = re.compile(r"^==> (\S+) <==$")
_IP_ADDR = re.compile(r"^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+/\d+)\s")
_HOST_KEY = re.compile(r"^((?:ssh-(?:ed25519|rsa|dss))|ecdsa-sha2-nistp\d+)\s+([A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class SshEntry:
    """One ``Host`` block of ``vagrant ssh-config``."""

    name: str
    hostname: str = ""
    port: int = 22
    user: str = ""
    identity_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    """What one VM reported about itself."""

    os_id: str = ""
    os_like: str = ""
    addresses: tuple[tuple[str, ipaddress.IPv4Interface], ...] = ()  # (device, address)
    host_keys: tuple[str, ...] = ()  # "type base64"

    @property
    def family(self) -> str | None:
        return os_family(self.os_id, self.os_like)


@dataclass(frozen=True)
class Vm:
    """A VM as it goes into the inventory, with what was left out and why."""

    name: str
    address: ipaddress.IPv4Address
    iface: str
    family: str | None
    host_keys: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())  # "dev address (why)"


def parse_ssh_config(text: str) -> list[SshEntry]:
    """``vagrant ssh-config`` output -> its Host blocks, in order. Other lines are ignored."""
    entries: list[SshEntry] = []
    current: dict[str, Any] | None = None
    for raw in text.replace("\r", "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        key, value = key.lower(), _unquote(value.strip())
        if key == "host" and raw[:1] not in (" ", "\t"):
            if current is not None:
                entries.append(_entry(current))
            current = {"name": value, "identity_files": []}
        elif current is not None and raw[:1] in (" ", "\t"):
            if key == "hostname":
                current["hostname"] = value
            elif key == "port":
                current["port"] = _port(value, current["name"])
            elif key == "user":
                current["user"] = value
            elif key == "identityfile":
                current["identity_files"].append(value)
    if current is not None:
        entries.append(_entry(current))
    if not entries:
        raise BadInput("vagrant ssh-config: no 'Host' entries (are the VMs up? `vagrant status`)")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise BadInput(f"vagrant ssh-config: duplicate Host names in {names}")
    return entries


def _entry(values: dict[str, Any]) -> SshEntry:
    return SshEntry(
        name=values["name"],
        hostname=values.get("hostname", ""),
        port=values.get("port", 22),
        user=values.get("user", ""),
        identity_files=tuple(values["identity_files"]),
    )


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _port(value: str, name: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise BadInput(f"vagrant ssh-config: Host {name}: Port {value!r} is not a port number")
    return int(value)


def parse_probe(text: str) -> Probe:
    """Output of PROBE_COMMAND (os-release, ``ip -o -4 addr show``, host keys) -> Probe.

    Lines are recognised by their shape, so the parts may come in any order; ``vagrant ssh -c``
    output (CRLF line ends) works as is.
    """
    values: dict[str, str] = {}
    addresses: list[tuple[str, ipaddress.IPv4Interface]] = []
    keys: list[str] = []
    for raw in text.replace("\r", "").splitlines():
        line = raw.strip()
        if match := _IP_ADDR.match(line):
            dev = match.group(1).split("@")[0]
            addresses.append((dev, ipaddress.IPv4Interface(match.group(2))))
        elif match := _HOST_KEY.match(line):
            keys.append(f"{match.group(1)} {match.group(2)}")
        elif "=" in line and line.split("=", 1)[0] in ("ID", "ID_LIKE"):
            key, value = line.split("=", 1)
            values[key] = " ".join(shlex.split(value)) if value else ""
    return Probe(values.get("ID", ""), values.get("ID_LIKE", ""), tuple(addresses), tuple(keys))


def split_probes(text: str) -> dict[str, str]:
    """A recorded probe file -> VM name -> its probe output.

    Each VM's output follows a line ``==> NAME <==`` (the header ``tail`` prints for several
    files), e.g. made with::

        for vm in node1 node2 node3; do echo "==> $vm <=="; vagrant ssh $vm -c '...'; done
    """
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.replace("\r", "").splitlines():
        if match := _SECTION.match(line.strip()):
            name = match.group(1)
            if name in sections:
                raise BadInput(f"probe: VM {name!r} appears twice")
            current = sections[name] = []
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise BadInput(f"probe: text before the first '==> NAME <==' line: {line.strip()!r}")
    return {name: "\n".join(lines) + "\n" for name, lines in sections.items()}


def choose_address(
    entry: SshEntry, probe: Probe, underlay: ipaddress.IPv4Network
) -> tuple[str, ipaddress.IPv4Interface, list[str]]:
    """The VM's private-network address: its one IPv4 address inside UNDERLAY.

    Never VirtualBox's NAT network (10.0.2.0/24) nor the address Vagrant's own SSH goes to.
    Returns (device, address, what was skipped and why).
    """
    chosen: list[tuple[str, ipaddress.IPv4Interface]] = []
    skipped: list[str] = []
    for dev, addr in probe.addresses:
        if addr.ip.is_loopback:
            continue
        if addr.ip in VIRTUALBOX_NAT:
            skipped.append(f"{dev} {addr.ip} (NAT)")
        elif str(addr.ip) == entry.hostname:
            skipped.append(f"{dev} {addr.ip} (Vagrant's management address)")
        elif addr.ip not in underlay:
            skipped.append(f"{dev} {addr.ip} (outside {underlay})")
        else:
            chosen.append((dev, addr))
    seen = ", ".join(f"{d} {a}" for d, a in probe.addresses) or "none"
    if not chosen:
        raise BadInput(
            f"{entry.name}: no IPv4 address inside {underlay} (it has: {seen}); is the private "
            "network up, and does --underlay match the Vagrantfile's network?"
        )
    if len(chosen) > 1:
        raise BadInput(
            f"{entry.name}: more than one address inside {underlay} ({seen}); pass a narrower "
            "--underlay"
        )
    return chosen[0][0], chosen[0][1], skipped


def vms(
    entries: list[SshEntry], probes: dict[str, Probe], underlay: ipaddress.IPv4Network
) -> list[Vm]:
    """Every ssh-config entry with its probe -> the VMs for the inventory, in ssh-config order."""
    missing = [e.name for e in entries if e.name not in probes]
    if missing:
        raise BadInput(f"probe: no output for {', '.join(missing)}")
    result = []
    for entry in entries:
        probe = probes[entry.name]
        dev, addr, skipped = choose_address(entry, probe, underlay)
        result.append(Vm(entry.name, addr.ip, dev, probe.family, probe.host_keys, tuple(skipped)))
    addresses = [vm.address for vm in result]
    if len(set(addresses)) != len(addresses):
        raise BadInput(f"two VMs share one address in {underlay}: {sorted(map(str, addresses))}")
    return result


def inventory_data(
    machines: list[Vm],
    *,
    name: str,
    network: str,
    backend: str,
    key: Path,
    known_hosts: Path,
) -> dict[str, Any]:
    """The inventory as plain data (what ``overlayctl init`` reads)."""
    families = {vm.family for vm in machines}
    cluster: dict[str, Any] = {"name": name, "network": network, "backend": backend}
    common = families.pop() if len(families) == 1 else None
    if common is not None:
        cluster["os"] = common
    hosts = []
    for vm in machines:
        host: dict[str, Any] = {"name": vm.name, "address": str(vm.address), "iface": vm.iface}
        if common is None and vm.family is not None:
            host["os"] = vm.family
        hosts.append(host)
    return {
        "cluster": cluster,
        "ssh": {"user": "root", "key": str(key), "known_hosts": str(known_hosts)},
        "hosts": hosts,
    }


def merge_known_hosts(existing: str, machines: list[Vm]) -> str:
    """EXISTING known_hosts text with every line for the VMs' addresses replaced by their keys.

    Lines naming other hosts (and hashed lines, which cannot be read) are kept as they are.
    """
    ours = {str(vm.address) for vm in machines}
    kept = []
    for line in existing.splitlines():
        hosts = line.split(maxsplit=1)[0] if line.strip() else ""
        if hosts and not hosts.startswith("#") and ours & set(hosts.split(",")):
            continue
        kept.append(line)
    added = [f"{vm.address} {key}" for vm in machines for key in vm.host_keys]
    return "".join(f"{line}\n" for line in [*kept, *added])
