"""forwarding: the host does not forward the overlay's traffic: `net.ipv4.ip_forward` is 0, or
filter FORWARD's policy DROP decides it (docker sets that policy; the agent's FLANNEL-FWD
accepts the Network ahead of it unless --no-iptables-forward-rules), or docker's
DOCKER-ISOLATION-STAGE-* chains drop it. Walked with doctor/rulesets.py, as the firewall check
does; explicit DROP rules elsewhere are the firewall check's."""

from __future__ import annotations

from overlayctl.doctor.checks.firewall import evidence, forwarded_packets, is_forwarding_matter
from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered, peers_of
from overlayctl.doctor.rulesets import hook_verdict

CHECK = "forwarding"


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        if f.sysctl_int("net.ipv4.ip_forward") == 0:
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    "net.ipv4.ip_forward is 0: the host routes no packet "
                    "between the overlay device and docker0",
                    "net.ipv4.ip_forward = 0",
                    "sysctl -w net.ipv4.ip_forward=1 (and keep it in /etc/sysctl.d/)",
                    hop=name,
                )
            )
        if f.iptables is None:
            continue
        for peer in peers_of(ctx, name):
            for pkt in forwarded_packets(ctx, name, f, peer):
                v = hook_verdict(f.iptables, "FORWARD", pkt)
                if not v.dropped or not is_forwarding_matter(v):
                    continue
                if v.rule is None:
                    what = (
                        f"filter FORWARD's policy DROP decides {pkt.src} -> {pkt.dst} "
                        "(no accept rule for the Network before it)"
                    )
                    fix = (
                        "systemctl restart overlay-agent (its FLANNEL-FWD chain accepts the "
                        f"Network), or: iptables -I FORWARD -s {ctx.plane.network} -j ACCEPT"
                        f" && iptables -I FORWARD -d {ctx.plane.network} -j ACCEPT"
                    )
                else:
                    what = f"docker's {v.rule.chain} drops {pkt.src} -> {pkt.dst}"
                    fix = (
                        f"iptables -I DOCKER-USER -s {ctx.plane.network} -j ACCEPT (docker "
                        "keeps DOCKER-USER ahead of its isolation chains)"
                    )
                found.append(
                    Finding(
                        name,
                        CHECK,
                        "warning" if v.maybe_accepted else "error",
                        what,
                        evidence(v),
                        fix,
                        peer=peer.name,
                        hop=f"{name} FORWARD",
                    )
                )
                break  # one per peer
    return found
