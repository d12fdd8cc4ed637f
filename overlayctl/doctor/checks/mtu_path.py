"""`mtu`, the path's part: a Don't-Fragment echo as large as the overlay needs (its MTU plus the
backend's encapsulation: vxlan 50, udp 28, host-gw 0) does not cross the underlay from a host
to a peer that answers small echoes; the probe then bisected the largest size that does
(overlayctl/remote/scripts/doctor_probe.py). Overlay packets of full size would be lost the
same way, silently: pings work, large transfers hang.
"""

from __future__ import annotations

from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding
from overlayctl.doctor.probes import OVERHEAD, ProbeReport

CHECK = "mtu"


def _frag_needed(report: ProbeReport, sender_dst: str) -> str:
    """`; 10.0.0.254 said fragmentation needed, MTU 1400` from the ICMP errors it got."""
    said = {(e.get("from"), e.get("mtu")) for e in report.icmp_errors
            if e.get("kind") == "m" and e.get("type") == 3 and e.get("code") == 4}  # fmt: skip
    return "".join(f"; {who} said fragmentation needed, MTU {mtu}" for who, mtu in sorted(said))


def _fix(ctx: Context, src: str, dst: str, wanted: int, path_mtu: int) -> str:
    a, b = ctx.probes[src], ctx.probes.get(dst)
    overhead = OVERHEAD.get(ctx.plane.backend, 0)
    low = [(r.host, r.underlay_dev, r.underlay_mtu) for r in (a, b)
           if r is not None and not r.error and 0 < r.underlay_mtu < wanted]  # fmt: skip
    if low:
        host, dev, mtu = low[0]
        return (f"on {host}: `ip link set dev {dev} mtu {wanted}` (it has {mtu}), or give every "
                f"host's underlay MTU {path_mtu} and restart overlay-agent (FLANNEL_MTU "
                f"{path_mtu - overhead})")  # fmt: skip
    return (f"raise the MTU of the network between {src} and {dst} to {wanted}, or set every "
            f"host's underlay MTU to {path_mtu} and restart overlay-agent (FLANNEL_MTU "
            f"{path_mtu - overhead})")  # fmt: skip


def run(ctx: Context) -> list[Finding]:
    findings = []
    overhead = OVERHEAD.get(ctx.plane.backend, 0)
    for src, dst in ctx.pairs:
        report = ctx.probes.get(src)
        res = report.peers.get(dst) if report is not None and not report.error else None
        if res is None or res.mtu.ok or not res.icmp.replies:
            continue  # fine, or not reachable at all (the underlay check says so)
        mtu, addr = res.mtu, ctx.address(dst)
        if mtu.path_mtu is None or mtu.path_mtu >= mtu.wanted - 1:
            continue  # the big probes were lost but everything below came back: no evidence
        measured = f"{mtu.path_mtu}" if mtu.below in (None, mtu.path_mtu + 1) else \
            f"between {mtu.path_mtu} and {mtu.below - 1}"  # fmt: skip
        local = f" ({mtu.error} on {src})" if mtu.error else ""
        findings.append(Finding(
            src, CHECK, "error",
            f"the underlay path {src} -> {dst} carries {measured} bytes, the overlay needs "
            f"{mtu.wanted} (MTU {mtu.wanted - overhead} + {overhead} of {ctx.plane.backend})",
            evidence=f"Don't-Fragment echoes to {addr}: {mtu.wanted} bytes lost{local}, "
                     f"{mtu.path_mtu} came back; {src}'s {report.underlay_dev} MTU "
                     f"{report.underlay_mtu}" + _frag_needed(report, addr),
            fix=_fix(ctx, src, dst, mtu.wanted, mtu.path_mtu),
            peer=dst, hop=f"path {src} -> {dst}",
        ))  # fmt: skip
    return findings
