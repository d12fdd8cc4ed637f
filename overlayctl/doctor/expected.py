"""What each backend's agent installs towards a peer, as pure expectations shared by `status`
(actions/status.py, from `ip route` text) and doctor's routes check (from `ip -j` JSON):
vxlan an onlink route on flannel.VNI and a `VtepMAC dst PublicIP` fdb entry, host-gw a route via
the peer's PublicIP, udp one route for the whole Network on flannel0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from overlayctl.etcd.cluster import LeaseInfo


@dataclass(frozen=True)
class Route:
    dest: str
    dev: str = ""
    via: str = ""

    @classmethod
    def parse(cls, line: str) -> Route:
        """`172.21.5.0/24 via 172.21.5.0 dev flannel.1 onlink` -> Route."""
        words = line.split()
        after = dict(itertools.pairwise(words))  # each word -> the one after it
        return cls(words[0] if words else "", after.get("dev", ""), after.get("via", ""))


def _installed(backend: str | None, route: Route | None, peer: LeaseInfo) -> bool:
    """Whether ROUTE is the one BACKEND installs towards PEER (None: any route will do)."""
    if route is None:
        return False
    if backend == "vxlan":
        return route.dev.startswith("flannel.")
    if backend == "host-gw":
        return route.via == peer.public_ip
    return True


def missing_routes(
    backend: str | None, network: str | None, routes: list[Route], peers: list[LeaseInfo]
) -> list[str]:
    """Pure: the peer routes BACKEND should have installed and that are not there.

    vxlan: each peer subnet onlink on the flannel.VNI device; host-gw: each peer subnet via the
    peer's PublicIP; udp: one route for the whole network on flannel0 (the agent picks the peer
    per packet), so a missing one is named by the network. None (unknown): a route per subnet.
    """
    by_dest = {r.dest: r for r in routes}
    if backend == "udp":
        route = by_dest.get(network or "")
        whole = route is not None and route.dev == "flannel0"
        return [] if whole or not peers else [network or "the network route"]
    return [p.subnet for p in peers if not _installed(backend, by_dest.get(p.subnet), p)]


def missing_fdb(fdb_lines: list[str], peers: list[LeaseInfo]) -> list[str]:
    """Pure: vxlan peers whose `VtepMAC dst PublicIP` entry is not in the VXLAN device's fdb."""
    have = set()
    for line in fdb_lines:
        words = line.split()
        after = dict(itertools.pairwise(words))
        if words and "dst" in after:
            have.add((words[0].lower(), after["dst"]))
    return [p.subnet for p in peers if p.vtep_mac and (p.vtep_mac, p.public_ip) not in have]
