"""routes: for each lease in etcd, what the backend installs on every other host
(doctor/expected.py, shared with `status`): vxlan the route onlink via flannel.VNI, the
neighbour entry (the peer's .0 -> its VtepMAC) and the fdb entry (VtepMAC dst PublicIP);
host-gw the route via the PublicIP, and the peer directly connected (the kernel's route to it
has no gateway: host-gw needs one L2 segment); udp the Network's route on flannel0. Stale: a
route inside the Network, a neighbour or an fdb entry that no lease explains any more."""

from __future__ import annotations

import ipaddress

from overlayctl.doctor.context import Context
from overlayctl.doctor.expected import Route, missing_fdb, missing_routes
from overlayctl.doctor.facts import HostFacts, overlay_device
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import Peer, answered, peers_of

CHECK = "routes"
RESTART = "systemctl restart overlay-agent (it reinstalls every peer's entries)"


def _install_fix(ctx: Context, peer: Peer, dev: str | None) -> str:
    p = peer.subnet
    if ctx.plane.backend == "host-gw":
        return f"ip route replace {p} via {peer.public_ip}; or {RESTART}"
    if ctx.plane.backend == "vxlan" and p is not None:
        zero = p.network_address
        return (
            f"ip route replace {p} via {zero} dev {dev} onlink && ip neigh replace {zero} "
            f"lladdr {peer.vtep_mac} dev {dev} nud permanent && bridge fdb append "
            f"{peer.vtep_mac} dev {dev} dst {peer.public_ip}; or {RESTART}"
        )
    return f"ip route replace {ctx.plane.network} dev flannel0; or {RESTART}"


def _missing(ctx: Context, name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    dev = overlay_device(ctx.plane)
    routes = [Route(r.get("dst", ""), r.get("dev", ""), r.get("gateway", "")) for r in f.routes]
    leases = [x for x in ctx.leases if x.host and x.host != name and not x.error]
    gone = set(missing_routes(ctx.plane.backend, ctx.plane.network, routes, leases))
    fdb = [f"{e.get('mac', '')} dst {e.get('dst', '')}" for e in f.fdb.get(dev or "", [])]
    no_fdb = set(missing_fdb(fdb, leases)) if ctx.plane.backend == "vxlan" else set()
    neigh = {
        (n.get("dst"), (n.get("lladdr") or "").lower()) for n in f.neigh if n.get("dev") == dev
    }
    found = []
    for peer in peers:
        what = []
        if str(peer.subnet) in gone or ctx.plane.network in gone:
            what.append(
                f"no route to {peer.subnet if ctx.plane.backend != 'udp' else ctx.plane.network}"
            )
        if str(peer.subnet) in no_fdb:
            what.append(f"no fdb entry {peer.vtep_mac} dst {peer.public_ip} on {dev}")
        zero = str(peer.subnet.network_address) if peer.subnet else ""
        if ctx.plane.backend == "vxlan" and peer.vtep_mac and (zero, peer.vtep_mac) not in neigh:
            what.append(f"no neighbour {zero} lladdr {peer.vtep_mac} on {dev}")
        if what:
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    f"{'; '.join(what)} (the lease of {peer.name}, {peer.subnet})",
                    f"{len(f.routes)} routes, {len(fdb)} fdb entries on {dev}",
                    _install_fix(ctx, peer, dev),
                    peer=peer.name,
                    hop=f"{name} routing",
                )
            )
    return found


def _stale(ctx: Context, name: str, f: HostFacts) -> list[Finding]:
    net = ipaddress.IPv4Network(ctx.plane.network)
    subnets = {ipaddress.IPv4Network(x.subnet) for x in ctx.leases if not x.error}
    macs = {x.vtep_mac for x in ctx.leases if x.vtep_mac}
    zeros = {str(s.network_address) for s in subnets}
    dev = overlay_device(ctx.plane)
    stale = []
    for r in f.routes:
        try:
            dst = ipaddress.IPv4Network(r.get("dst", ""))
        except ValueError:
            continue
        own = f.subnet.network if f.subnet else None  # docker0's: the agent check's matter
        if dst.prefixlen > net.prefixlen and dst.subnet_of(net) and dst not in {*subnets, own}:
            stale.append(
                (f"route {dst} dev {r.get('dev')}: no lease has it", f"ip route del {dst}")
            )
        elif ctx.plane.backend == "udp" and dst in subnets and r.get("gateway"):
            # e.g. host-gw's route left by a backend change: it shadows flannel0's Network route
            stale.append(
                (
                    f"route {dst} via {r['gateway']} (not flannel0's; udp routes the "
                    "whole Network on flannel0)",
                    f"ip route del {dst}",
                )
            )
    for n in f.neigh:
        if dev and n.get("dev") == dev and n.get("dst") not in zeros:
            stale.append(
                (
                    f"neighbour {n.get('dst')} on {dev}: no lease has it",
                    f"ip neigh del {n.get('dst')} dev {dev}",
                )
            )
    for e in f.fdb.get(dev or "", []):
        mac = (e.get("mac") or "").lower()
        if e.get("dst") and mac not in macs and mac != "00:00:00:00:00:00":
            stale.append(
                (
                    f"fdb {mac} dst {e['dst']} on {dev}: no lease has that VtepMAC",
                    f"bridge fdb del {mac} dev {dev} dst {e['dst']}",
                )
            )
    return [
        Finding(
            name,
            CHECK,
            "warning",
            f"stale {what}",
            what,
            fix,
            hop=f"{name} routing",
        )
        for what, fix in stale
    ]


def _same_segment(name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    found = []
    for g in f.route_gets:
        peer = next((p for p in peers if g.kind == "peer" and g.args[:1] == (p.public_ip,)), None)
        if peer is not None and g.route and g.route.get("gateway"):
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    f"host-gw: {peer.name} ({peer.public_ip}) is not on this "
                    f"host's L2 segment: it is reached via the router {g.route['gateway']}",
                    f"ip route get {peer.public_ip}: via {g.route['gateway']} "
                    f"dev {g.route.get('dev')}",
                    "put every host on one segment, or use the vxlan backend (backend: vxlan)",
                    peer=peer.name,
                    hop=f"path {name} -> {peer.name}",
                )
            )
    return found


def run(ctx: Context) -> list[Finding]:
    if not ctx.leases_known:
        return []
    found: list[Finding] = []
    for name, f in answered(ctx):
        peers = [p for p in peers_of(ctx, name) if p.subnet is not None]
        found += _missing(ctx, name, f, peers)
        found += _stale(ctx, name, f)
        if ctx.plane.backend == "host-gw":
            found += _same_segment(name, f, peers)
    return found
