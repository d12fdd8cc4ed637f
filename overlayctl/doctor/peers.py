"""The peers a host-level check looks at, and the hosts whose facts it can read: the two loops
every check in checks/ starts from."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts


@dataclass(frozen=True)
class Peer:
    """Another node host as this host should see it: from its lease (SUBNET set) or, with
    etcd unknown, from the inventory alone (SUBNET None)."""

    name: str
    public_ip: str
    subnet: ipaddress.IPv4Network | None
    vtep_mac: str = ""


def answered(ctx: Context) -> list[tuple[str, HostFacts]]:
    """The hosts doctor looks at whose facts could be read, in CTX.hosts' order."""
    return [(h, ctx.facts[h]) for h in ctx.hosts if h in ctx.facts and not ctx.facts[h].error]


def peers_of(ctx: Context, name: str) -> list[Peer]:
    """The other node hosts NAME exchanges overlay traffic with: each lease of another
    inventory host (leases from outside the inventory get no data plane: the agent's
    allow-list refuses them), else every other node host's inventory address."""
    if ctx.leases_known:
        return [Peer(lease.host, lease.public_ip, ipaddress.IPv4Network(lease.subnet),
                     lease.vtep_mac) for lease in ctx.leases
                if lease.host and lease.host != name and not lease.error]  # fmt: skip
    return [Peer(h.name, str(h.address), None) for h in ctx.inv.hosts
            if h.is_node and h.name != name]  # fmt: skip
