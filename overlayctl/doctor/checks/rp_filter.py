"""rp_filter: strict reverse-path filtering (1) that drops the overlay's traffic. The kernel
uses max(conf.all, conf.<dev>) for the device a packet arrives on; strict mode drops a packet
when the route back to its source does not leave through that device. doctor does not guess
that from the routes: the facts script asks the kernel itself (`ip route get <own .1> from
<peer's subnet> iif <overlay device>`, and for the tunnel `<own address> from <peer's
PublicIP> iif <underlay>`, read-only lookups) and strict mode's refusal is the answer "Invalid
cross-device link". That is an error. Loose mode (2) never drops what a route explains, and
strict mode whose lookups pass is no finding: nothing to warn about."""

from __future__ import annotations

from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered, peers_of

CHECK = "rp_filter"


def effective(f: HostFacts, dev: str) -> int | None:
    values = [f.sysctl_int(f"net.ipv4.conf.{k}.rp_filter") for k in ("all", dev)]
    known = [v for v in values if v is not None]
    return max(known) if known else None


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        peers = {p.public_ip: p for p in peers_of(ctx, name)}
        subnets = {str(p.subnet.network_address + 1): p for p in peers.values() if p.subnet}
        for g in f.route_gets:
            if g.kind not in ("rp-overlay", "rp-underlay") or not g.error:
                continue
            src, dev = g.args[2], g.args[4]
            mode = effective(f, dev)
            if "cross-device" not in g.error and not ("Invalid argument" in g.error and mode == 1):
                continue
            peer = peers.get(src) if g.kind == "rp-underlay" else subnets.get(src)
            what = (
                "its encapsulated packets" if g.kind == "rp-underlay" else "its containers' traffic"
            )
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    f"strict rp_filter on {dev} drops {what} from {peer.name if peer else src}: "
                    f"the route back to {src} does not leave through {dev}",
                    f"rp_filter all={f.sysctl.get('net.ipv4.conf.all.rp_filter')} {dev}="
                    f"{f.sysctl.get(f'net.ipv4.conf.{dev}.rp_filter')} (effective {mode}); "
                    f"ip route get {' '.join(g.args)}: {g.error}",
                    f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{dev}.rp_filter=2 "
                    "(loose; keep it in /etc/sysctl.d/)",
                    peer=peer.name if peer else None,
                    hop=f"{name} {dev} ingress",
                )
            )
    return found
