"""The host firewall, as values for its templates: who may reach which of overlayctl's ports.

Pure: the inventory alone decides. render.py lays the values out as files:

- where firewalld is active (RHEL family), two policies (firewalld 0.9+): `overlayctl-host`
  (ingress ANY, egress HOST) accepts etcd's client port from cluster hosts, its peer port from
  members and the backend's UDP port from cluster hosts, and drops those ports from anyone
  else, ahead of every zone (a zone with target ACCEPT, docker's own among them, would
  otherwise let containers in); `overlayctl-forward` (ingress ANY, egress ANY) accepts
  forwarded traffic from overlay subnets to overlay subnets and nothing else. No zone of ours
  and no interface moved: the underlay's zone is whatever the host has, and ANY covers it, the
  docker bridge and the overlay device without knowing their zones (facts, not inventory).
- elsewhere, with cluster.host_firewall: iptables chains (`iptables-restore --noflush`):
  OVERLAYCTL-INPUT (filter, first in INPUT) lets etcd's ports in only from cluster hosts,
  members and 127.0.0.1; OVERLAYCTL-FORWARD (mangle, first in FORWARD) drops what the overlay
  Network sends to any member's etcd ports, so a container cannot reach another host's etcd
  through docker's masquerade. It is in mangle because filter FORWARD's first place is taken
  by whoever inserts last (docker's DOCKER-USER, the agent's FLANNEL-FWD, both accepting the
  overlay); mangle comes before filter whatever they do. The backend's port is the agent's
  own business there (its OVERLAY-PEERS chain).
"""

from __future__ import annotations

from dataclasses import dataclass

from overlayctl import paths as hp
from overlayctl.inventory.model import BACKEND_OPTIONS, Host, Inventory


@dataclass(frozen=True)
class Opening:
    """One port, from these source addresses only (and dropped from any other)."""

    protocol: str  # tcp | udp
    port: int
    sources: tuple[str, ...]  # IPv4 addresses
    what: str  # for the rule's comment: "etcd clients", "etcd peers", "vxlan"


def client_ports(inv: Inventory) -> list[int]:
    """etcd's client ports: 2379, and 4001 with legacy_client_port."""
    ports = [hp.ETCD_CLIENT_PORT]
    if inv.cluster.legacy_client_port:
        ports.append(hp.ETCD_LEGACY_CLIENT_PORT)
    return ports


def backend_port(inv: Inventory) -> int | None:
    """The backend's UDP port (vxlan 8472, udp 8285, or the configured one; host-gw none)."""
    specs = BACKEND_OPTIONS[inv.cluster.backend]
    if "port" not in specs:
        return None
    return int(dict(inv.cluster.backend_options).get("port", specs["port"].default))


def etcd_openings(inv: Inventory, host: Host) -> list[Opening]:
    """An etcd member's ports: clients from every cluster host, peers from members only."""
    if not host.is_etcd:
        return []
    hosts = ("127.0.0.1", *(str(h.address) for h in inv.hosts))  # loopback: an operator's etcdctl
    members = tuple(str(m.address) for m in inv.etcd_members)
    openings = [Opening("tcp", port, hosts, "etcd clients") for port in client_ports(inv)]
    return [*openings, Opening("tcp", hp.ETCD_PEER_PORT, members, "etcd peers")]


def firewalld_openings(inv: Inventory, host: Host) -> list[Opening]:
    """Everything the host policy opens: etcd's ports, and the backend's on node hosts."""
    openings = etcd_openings(inv, host)
    port = backend_port(inv)
    if host.is_node and port is not None:
        hosts = tuple(str(h.address) for h in inv.nodes)
        openings.append(Opening("udp", port, hosts, inv.cluster.backend))
    return openings


def etcd_ports(inv: Inventory) -> list[int]:
    """Every port etcd listens on: what the overlay Network may not reach on any member."""
    return [*client_ports(inv), hp.ETCD_PEER_PORT]


def members(inv: Inventory) -> list[str]:
    return [str(m.address) for m in inv.etcd_members]
