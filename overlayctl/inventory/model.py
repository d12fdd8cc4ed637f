"""The inventory's typed model: frozen dataclasses, the choices each field allows (no I/O)."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

BACKENDS = ("vxlan", "host-gw", "udp")
OS_FAMILIES = ("rhel", "debian")
ROLES = ("etcd", "node")
DOCKER_MODES = ("dropin", "execstart")
DEFAULT_ETCD_PREFIX = "/coreos.com/network"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_ETCD_HOSTS = 3  # hosts that get [etcd, node] when no host lists roles


class BackendOption(NamedTuple):
    """A `cluster.backend_options` key: its flannel JSON name, type, range and flannel default."""

    json_key: str
    kind: type
    lo: int
    hi: int
    default: int | bool


BACKEND_OPTIONS: dict[str, dict[str, BackendOption]] = {
    "vxlan": {
        "vni": BackendOption("VNI", int, 1, 2**24 - 1, 1),
        "port": BackendOption("Port", int, 1, 65535, 8472),
        "direct_routing": BackendOption("DirectRouting", bool, 0, 1, False),
    },
    "udp": {
        "port": BackendOption("Port", int, 1, 65535, 8285),
        # ours, opt-in, every host must agree: see the agent's udp backend
        "batching": BackendOption("Batching", bool, 0, 1, False),
    },
    "host-gw": {},
}


@dataclass(frozen=True)
class Ifcfg:
    """A static IPv4 configuration for the host's `iface`."""

    prefix: int
    gateway: ipaddress.IPv4Address | None
    dns: tuple[ipaddress.IPv4Address, ...]
    uuid: uuid.UUID | None  # None: derived by render from cluster, host and iface


@dataclass(frozen=True)
class Host:
    index: int
    name: str
    address: ipaddress.IPv4Address
    iface: str | None
    roles: tuple[str, ...]
    os: str | None  # the host's own, else cluster.os; None: to be detected over SSH
    ifcfg: Ifcfg | None

    @property
    def label(self) -> str:
        """How messages name this host: `hosts[1] (node2)`."""
        return f"hosts[{self.index}] ({self.name})"

    @property
    def is_etcd(self) -> bool:
        return "etcd" in self.roles

    @property
    def is_node(self) -> bool:
        return "node" in self.roles

    @property
    def underlay(self) -> ipaddress.IPv4Network | None:
        """The L2 segment the inventory declares (from ifcfg.prefix), if any."""
        if self.ifcfg is None:
            return None
        return ipaddress.IPv4Network(f"{self.address}/{self.ifcfg.prefix}", strict=False)


@dataclass(frozen=True)
class Cluster:
    name: str
    network: ipaddress.IPv4Network
    subnet_len: int
    subnet_min: ipaddress.IPv4Address
    subnet_max: ipaddress.IPv4Address
    backend: str
    backend_options: tuple[tuple[str, int | bool], ...]  # (inventory key, value), sorted
    etcd_prefix: str
    tls: bool
    legacy_client_port: bool
    os: str | None
    ip_masq: bool
    agent_options: tuple[str, ...]
    docker_mode: str
    # iptables rules for etcd's ports where firewalld is not active (plan/firewall.py)
    host_firewall: bool = True

    @property
    def subnet_count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax, both included."""
        size = 1 << (32 - self.subnet_len)
        return (int(self.subnet_max) - int(self.subnet_min)) // size + 1


@dataclass(frozen=True)
class JumpHost:
    user: str | None
    host: str
    port: int


@dataclass(frozen=True)
class Ssh:
    user: str
    port: int
    key: Path | None
    known_hosts: Path
    sudo: bool
    jump: JumpHost | None


@dataclass(frozen=True)
class Inventory:
    source: Path | None  # the file it came from (None when parsed from data)
    cluster: Cluster
    ssh: Ssh
    hosts: tuple[Host, ...]

    @property
    def etcd_members(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_etcd)

    @property
    def nodes(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_node)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)
