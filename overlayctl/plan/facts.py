"""What a host is like before we change it: OS family, package manager, packages, interfaces,
runtime settings and unit states (facts.sh's output), and its files as found (read-files.sh's),
parsed by pure code. Gathered by overlayctl/phases/facts.py in one round trip."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host, Inventory
from overlayctl.paths import FIREWALLD_LEGACY_PREFIX, FIREWALLD_POLICIES_SINCE


def env_settings(text: str) -> dict[str, str]:
    """An env-style file (etcd.conf, subnet.env, /run/flannel/docker, sysconfig): KEY=VALUE
    lines, comments skipped, surrounding quotes removed. Never raises: hand-made files are read
    with it too."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            found[key.strip()] = value.strip().strip('"').strip("'")
    return found


@dataclass(frozen=True)
class RemoteFile:
    """A file as found on a host; content None when absent."""

    path: str
    content: bytes | None
    mode: int | None = None
    owner: str | None = None


def parse_files(out: str, paths: Sequence[str]) -> dict[str, RemoteFile]:
    """read-files.sh's output (one line per path) -> RemoteFile per path."""
    found: dict[str, RemoteFile] = {}
    for line, path in zip(out.splitlines(), paths, strict=True):
        state, _, rest = line.partition(" ")
        if state == "absent":
            found[path] = RemoteFile(path, None)
            continue
        mode, owner, data = rest.split(" ", 2)  # "MODE USER:GROUP BASE64" (BASE64 may be "")
        found[path] = RemoteFile(path, base64.b64decode(data), int(mode, 8), owner)
    return found


@dataclass(frozen=True)
class UnitState:
    active: str  # active, inactive, failed, activating, ...
    enabled: str  # enabled, disabled, masked, not-found (empty when unknown)


@dataclass(frozen=True)
class Firewalld:
    """firewalld's state on a host where it is active."""

    default_zone: str
    zones: dict[str, str] = field(default_factory=dict)  # interface -> zone (runtime)
    services: dict[str, frozenset[str]] = field(default_factory=dict)  # zone -> permanent ones
    version: str = ""  # `firewall-cmd --version`, e.g. 1.3.4 ("" when it did not say)

    def zone_of(self, iface: str | None) -> str:
        """The zone traffic arriving on IFACE is in: its own, else the default zone."""
        return self.zones.get(iface or "", self.default_zone)

    @property
    def has_policies(self) -> bool:
        """Whether this firewalld knows policies (0.9+); an unreadable version counts as new
        (every firewalld of the last years), so the reload is what would tell otherwise."""
        try:
            have = tuple(int(part) for part in self.version.split(".")[:2])
        except ValueError:
            return True
        return not have or have >= FIREWALLD_POLICIES_SINCE

    def legacy(self) -> list[tuple[str, str]]:
        """(zone, service) pairs of older overlayctl releases' firewalld services still enabled
        (their zone took the overlay Network with target ACCEPT: every port open to it)."""
        return sorted(
            (zone, name) for zone, names in self.services.items() for name in names
            if name.startswith(FIREWALLD_LEGACY_PREFIX + "-")
        )  # fmt: skip


@dataclass(frozen=True)
class Facts:
    os_id: str
    os_family: str | None  # debian | rhel | None (unsupported)
    os_version: str
    arch: str
    hostname: str
    python: str
    pkg_manager: str
    ip_forward: bool
    systemd: bool
    units: dict[str, UnitState] = field(default_factory=dict)
    addresses: dict[str, list[ipaddress.IPv4Interface]] = field(default_factory=dict)
    packages: frozenset[str] = frozenset()
    etcd_data_dirs: frozenset[str] = frozenset()  # etcd data dirs holding a member (bootstrapped)
    agent_digest: str = ""  # fingerprint of the agent wheelhouse installed ("" if none)
    # The install the running agent started with (None: no agent running, or none said): when
    # it differs from agent_digest, a run stopped between an install and the restart.
    agent_started_digest: str | None = None
    firewalld: Firewalld | None = None  # None: firewalld is not active
    docker_dropin: bool = False  # overlayctl's drop-in for docker exists
    docker_unit: str = ""  # docker's own unit file (FragmentPath)
    docker_unit_edited: bool = False  # its ExecStart carries --bip (docker.mode: execstart)

    def iface_of(self, address: ipaddress.IPv4Address) -> str | None:
        """The interface that holds ADDRESS on this host, if any."""
        for dev, addrs in self.addresses.items():
            if any(a.ip == address for a in addrs):
                return dev
        return None


def os_family(os_id: str, os_like: str) -> str | None:
    ids = {os_id, *os_like.split()}
    if ids & {"debian", "ubuntu"}:
        return "debian"
    if ids & {"rhel", "centos", "fedora", "rocky", "almalinux"}:
        return "rhel"
    return None


def parse_facts(text: str) -> Facts:
    """Pure: the facts script's output -> Facts."""
    values: dict[str, str] = {}
    units: dict[str, UnitState] = {}
    addresses: dict[str, list[ipaddress.IPv4Interface]] = {}
    packages: set[str] = set()
    data_dirs: set[str] = set()
    fw_zones: dict[str, str] = {}
    fw_services: dict[str, set[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "unit":
            name, *state = value.split()
            units[name] = UnitState(*[*state, "", ""][:2])
        elif key == "addr":
            dev, cidr = value.split()
            addresses.setdefault(dev.split("@")[0], []).append(ipaddress.IPv4Interface(cidr))
        elif key == "pkg":
            packages.add(value)
        elif key == "etcd_data":
            data_dirs.add(value)
        elif key == "fw_iface":
            iface, zone = value.split()
            fw_zones[iface] = zone
        elif key == "fw_service":
            zone, service = value.split()
            fw_services.setdefault(zone, set()).add(service)
        else:
            values[key] = value
    return Facts(
        os_id=values.get("os_id", ""),
        os_family=os_family(values.get("os_id", ""), values.get("os_like", "")),
        os_version=values.get("os_version", ""),
        arch=values.get("arch", ""),
        hostname=values.get("hostname", ""),
        python=values.get("python", ""),
        pkg_manager=values.get("pkg_manager", ""),
        ip_forward=values.get("ip_forward") == "1",
        systemd=values.get("systemd") == "yes",
        units=units,
        addresses=addresses,
        packages=frozenset(packages),
        etcd_data_dirs=frozenset(data_dirs),
        agent_digest=values.get("agent_digest", ""),
        agent_started_digest=values.get("agent_started_digest"),
        docker_dropin=values.get("docker_dropin") == "yes",
        docker_unit=values.get("docker_unit", ""),
        docker_unit_edited=values.get("docker_unit_edited") == "yes",
        firewalld=Firewalld(
            values["fw_default_zone"],
            fw_zones,
            {zone: frozenset(names) for zone, names in fw_services.items()},
            values.get("fw_version", ""),
        )
        if values.get("fw_default_zone")
        else None,
    )


def checked(name: str, facts: Facts) -> Facts:
    """FACTS of a host overlayctl can manage, or why not."""
    if facts.os_family is None:
        raise OverlayctlError(f"{name}: unsupported OS {facts.os_id!r} (Debian or RHEL family)")
    if not facts.systemd:
        raise OverlayctlError(f"{name}: systemd is not running; overlayctl manages systemd hosts")
    if not facts.pkg_manager:
        raise OverlayctlError(f"{name}: no apt-get, dnf or yum found")
    return facts


def resolve_host(inv: Inventory, host: Host, found: Facts) -> Host:
    """HOST with its detected OS family, after checking the inventory against the facts."""
    if found.iface_of(host.address) is None:
        # Catches NAT set-ups where every VM answers SSH on one address but owns another
        # (flannel #98: every node announcing Vagrant's 10.0.2.15).
        owned = ", ".join(f"{dev} {a}" for dev, addrs in found.addresses.items() for a in addrs)
        raise OverlayctlError(
            f"{host.name}: address {host.address} is not on any interface of the host "
            f"(it has: {owned or 'none'}); set hosts[].address to the underlay address"
        )
    holder = found.iface_of(host.address)
    if host.iface and host.iface != holder:
        raise OverlayctlError(
            f"{host.name}: address {host.address} is on {holder}, not on iface {host.iface!r}"
        )
    declared = host.os or inv.cluster.os
    if declared and declared != found.os_family:
        raise OverlayctlError(
            f"{host.name}: inventory says os {declared!r} but the host runs {found.os_id!r} "
            f"({found.os_family} family)"
        )
    return dataclasses.replace(host, os=found.os_family)
