"""firewall: a rule on the host that drops or rejects the backend's port (from a peer's
PublicIP, vxlan and udp) or the overlay's forwarded traffic (a peer's subnet to this host's,
and back), found by walking the host's own rules for that packet (doctor/rulesets.py):
iptables (`iptables-save -c`, the counters as evidence), nftables tables someone wrote with nft
itself, and firewalld's policies and the underlay's zone.

overlayctl's own chains pass this by construction, as they are installed: OVERLAYCTL-INPUT
only concerns etcd's TCP ports, OVERLAY-PEERS returns for every accepted peer, and
OVERLAYCTL-FORWARD only drops the Network towards etcd members. A FORWARD chain's policy and
docker's isolation chains are the forwarding check's to report (checks/forwarding.py).
"""

from __future__ import annotations

import ipaddress

from overlayctl import paths as hp
from overlayctl.doctor import firewalld as fwd
from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts, overlay_device
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import Peer, answered, peers_of
from overlayctl.doctor.rulesets import Packet, Verdict, hook_verdict, nft_drops

CHECK = "firewall"
PEERS_CHAIN = "OVERLAY-PEERS"  # agent/net/peerchain.py


def is_forwarding_matter(v: Verdict) -> bool:
    """A FORWARD drop the forwarding check reports: the chain's policy, docker's isolation."""
    return v.rule is None or v.rule.chain.startswith("DOCKER-ISOLATION-STAGE-")


def tunnel_packet(ctx: Context, name: str, f: HostFacts, peer: Peer) -> Packet:
    """The backend's UDP packet from PEER arriving on this host's underlay."""
    own = ctx.address(name)
    return Packet(ipaddress.IPv4Network(peer.public_ip), ipaddress.IPv4Network(own), "udp",
                  ctx.plane.port, f.device_with(own) or None)  # fmt: skip


def forwarded_packets(ctx: Context, name: str, f: HostFacts, peer: Peer) -> list[Packet]:
    """Overlay traffic PEER's containers exchange with ours, both ways through this host."""
    own = f.subnet.network if f.subnet else None
    if own is None or peer.subnet is None:
        return []
    dev = overlay_device(ctx.plane) or f.device_with(ctx.address(name)) or None
    return [Packet(peer.subnet, own, iif=dev, oif="docker0"),
            Packet(own, peer.subnet, iif="docker0", oif=dev)]  # fmt: skip


def possible_drop(v: Verdict) -> Verdict:
    """An accepted packet that a DROP with an unknown match (say --ctstate) may have hit first:
    that drop, as uncertain (a warning)."""
    if v.dropped or not v.maybe_dropped:
        return v
    rule, why = v.maybe_dropped[0]
    before = v.maybe[: v.maybe.index((rule, why))]
    return Verdict(rule.target, rule, maybe=before, unsure=why or "an unknown match")


def evidence(v: Verdict) -> str:
    lines = []
    if v.rule is not None:
        r = v.rule
        lines.append(f"{r.table}: {r.text}  [{r.packets} packets, {r.bytes} bytes]")
        if v.unsure:
            lines.append(f"it may not match: doctor cannot judge {v.unsure}")
    else:
        lines.append(f"{v.policy_chain} policy {v.verdict}")
    for rule, why in v.maybe:
        lines.append(f"before it, may match ({why or 'unknown'}): {rule.table}: {rule.text}")
    return "\n".join(lines)


def severity(v: Verdict) -> str:
    """A drop that surely matches is an error; one an earlier uncertain ACCEPT may preempt is
    a warning (the evidence names it)."""
    return "warning" if v.maybe_accepted or v.unsure else "error"


def _port_fix(v: Verdict, peer_ips: list[str], port: int) -> str:
    if v.rule is None:
        srcs = " ".join(f"iptables -I INPUT -s {ip} -p udp --dport {port} -j ACCEPT;"
                        for ip in peer_ips)  # fmt: skip
        return srcs.rstrip(";")
    if v.rule.chain == PEERS_CHAIN:
        return (
            "the agent's peers-only chain refuses it: add the PublicIP to the allow-list "
            "(overlayctl init) and restart the agent (systemctl restart overlay-agent)"
        )
    return v.rule.delete_command


def _port_findings(ctx: Context, name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    port, backend = ctx.plane.port, ctx.plane.backend
    if f.iptables is None or port is None:
        return []
    by_rule: dict[object, tuple[Verdict, list[Peer]]] = {}
    for peer in peers:
        v = hook_verdict(f.iptables, "INPUT", tunnel_packet(ctx, name, f, peer))
        v = possible_drop(v)
        if v.dropped:
            key = (v.rule.table, v.rule.chain, v.rule.index) if v.rule else v.policy_chain
            by_rule.setdefault(key, (v, []))[1].append(peer)
    found = []
    for v, dropped in by_rule.values():
        every = len(dropped) == len(peers) and len(peers) > 1
        where = f"{v.rule.table} {v.rule.chain}" if v.rule else v.policy_chain
        for peer in [None] if every else dropped:
            whom = "every peer" if peer is None else f"{peer.name} ({peer.public_ip})"
            found.append(Finding(
                name, CHECK, severity(v),
                f"{backend}'s {port}/udp from {whom} is dropped by {where}",
                evidence(v), _port_fix(v, [p.public_ip for p in dropped], port),
                peer=None if peer is None else peer.name, hop=f"{name} INPUT",
            ))  # fmt: skip
    return found


def _forward_findings(ctx: Context, name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    if f.iptables is None:
        return []
    found = []
    for peer in peers:
        for pkt in forwarded_packets(ctx, name, f, peer):
            v = possible_drop(hook_verdict(f.iptables, "FORWARD", pkt))
            if not v.dropped or is_forwarding_matter(v):
                continue
            found.append(Finding(
                name, CHECK, severity(v),
                f"forwarded overlay traffic {pkt.src} -> {pkt.dst} ({pkt.iif} -> {pkt.oif}) "
                f"is dropped by {v.rule.table} {v.rule.chain}",
                evidence(v), v.rule.delete_command, peer=peer.name, hop=f"{name} FORWARD",
            ))  # fmt: skip
            break  # one finding per peer: the other direction has the same cause and fix
    return found


def _nft_findings(ctx: Context, name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    found = []
    for peer in peers:
        asks = [("input", tunnel_packet(ctx, name, f, peer))] if ctx.plane.port else []
        asks += [("forward", p) for p in forwarded_packets(ctx, name, f, peer)]
        for hook, pkt in asks:
            for d in nft_drops(f.nft, hook, pkt):
                what = f"{ctx.plane.port}/udp" if hook == "input" else "forwarded overlay traffic"
                fix = (f"nft delete rule {d.table} {d.chain} handle {d.handle}" if d.handle
                       else f"nft chain {d.table} {d.chain} '{{ policy accept; }}'")  # fmt: skip
                found.append(Finding(
                    name, CHECK, "error" if d.sure else "warning",
                    f"nftables {d.table} chain {d.chain} drops {what} from {peer.name}",
                    f"{d.text} ({d.packets if d.packets is not None else '?'} packets)"
                    + ("" if d.sure else "; an unknown match on the way may spare it"),
                    fix, peer=peer.name, hop=f"{name} {hook}",
                ))  # fmt: skip
    return list(dict.fromkeys(found))


def _firewalld_findings(ctx: Context, name: str, f: HostFacts, peers: list[Peer]) -> list[Finding]:
    """The backend's port from each peer, and the overlay's forwarded traffic both ways,
    through firewalld's policies and zones (doctor/firewalld.py)."""
    if not f.firewalld_running or not f.firewalld_zones:
        return []
    port, network = ctx.plane.port, ctx.plane.network
    forward_policy = hp.FIREWALLD_FORWARD_POLICY
    policy = forward_policy if forward_policy in f.firewalld_policies else None
    found = []
    for peer in peers:
        if port is not None and ctx.plane.backend in ("vxlan", "udp"):
            pkt = tunnel_packet(ctx, name, f, peer)
            v = fwd.input_verdict(f, pkt)
            if v.dropped:
                accept = (f'rule family="ipv4" source address="{peer.public_ip}" '
                          f'port port="{port}" protocol="udp" accept')  # fmt: skip
                found.append(Finding(
                    name, CHECK, "error",
                    f"firewalld {v.where} {v.action}s {ctx.plane.backend}'s {port}/udp from "
                    f"{peer.name} ({peer.public_ip})",
                    fwd.evidence(f, v, pkt.iif), fwd.fix(v, accept, f"{port}/udp", policy),
                    peer=peer.name, hop=f"{name} INPUT",
                ))  # fmt: skip
        for pkt in forwarded_packets(ctx, name, f, peer):
            v = fwd.forward_verdict(f, pkt)
            if not v.dropped:
                continue
            accept = (f'rule family="ipv4" source address="{network}" '
                      f'destination address="{network}" accept')  # fmt: skip
            found.append(Finding(
                name, CHECK, "error",
                f"firewalld {v.where} {v.action}s forwarded overlay traffic {pkt.src} -> "
                f"{pkt.dst} ({pkt.iif} -> {pkt.oif})",
                fwd.evidence(f, v, pkt.iif), fwd.fix(v, accept, None, policy),
                peer=peer.name, hop=f"{name} FORWARD",
            ))  # fmt: skip
            break  # one finding per peer, as for iptables
    return found


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        peers = peers_of(ctx, name)
        if not peers:
            continue
        if ctx.plane.backend in ("vxlan", "udp"):
            found += _port_findings(ctx, name, f, peers)
        found += _firewalld_findings(ctx, name, f, peers)
        found += _forward_findings(ctx, name, f, peers)
        found += _nft_findings(ctx, name, f, peers)
    return found
