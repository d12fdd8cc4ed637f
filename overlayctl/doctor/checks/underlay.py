"""`underlay`: a peer's PublicIP does not answer ICMP, or the backend's own encapsulated probe
(a VXLAN frame to its port, a udp-backend datagram, host-gw's routed echo) does not arrive;
and where it stopped, from both ends' captures of the same marked probes (overlayctl/doctor/
probes.py): not seen leaving the sender ("A egress"), left but never on the receiver's NIC
("path A -> B"), on the NIC but never decapsulated onto the overlay device ("B input": a
firewall, or no vxlan/udp socket). The kernel's drop reasons (tracefs) are the evidence when
the host had them. A pair whose sender did not report is not judged (the runner says why).
"""

from __future__ import annotations

from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding
from overlayctl.doctor.probes import ProbeReport
from overlayctl.doctor.trace import summary

CHECK = "underlay"


def kernel_drops(report: ProbeReport | None) -> str:
    """`; kernel drops during the probe: ...` when tracefs told anything on that host."""
    if report is None or not report.drops:
        return ""
    return f"; kernel drops during the probe (tracefs): {summary(report.drops)}"


def counter_rises(report: ProbeReport | None, *names: str) -> str:
    """`; node2 Udp.NoPorts +3` for the counters of NAMES that rose during the probe."""
    if report is None:
        return ""
    rose = [f"{n} +{report.deltas[n]}" for n in names if report.deltas.get(n, 0) > 0]
    return f"; {report.host} {', '.join(rose)}" if rose else ""


def _path_fix(src: str, dst: str, what: str) -> str:
    return (f"the network between {src} and {dst} drops it (a security group, hypervisor or "
            f"router firewall): allow {what}")  # fmt: skip


def _delivered(ctx: Context, src: str, dst: str) -> bool | None:
    """Did SRC's encapsulated probe come out on DST (host-gw: reach DST's NIC and get an
    answer)? None: no lease to aim at (the lease and routes checks say so)."""
    a, b = ctx.probes[src], ctx.probes.get(dst)
    res = a.peers[dst]
    if not res.encap.sent and "no lease" in res.encap.error:
        return None
    if b is None or b.error:
        return res.encap.replies > 0
    if ctx.plane.backend == "host-gw":
        return b.count("nic", "e", ctx.address(src)) > 0 and res.encap.replies > 0
    return b.count("overlay", "e", ctx.address(src)) > 0


def _icmp(ctx: Context, src: str, dst: str) -> Finding | None:
    a, b = ctx.probes[src], ctx.probes.get(dst)
    res = a.peers.get(dst)
    if res is None or res.icmp.replies:
        return None
    addr_a, addr_b = ctx.address(src), ctx.address(dst)
    message = f"{dst}'s PublicIP {addr_b} does not answer ICMP echo from {src}"
    sent = f"{src} sent {res.icmp.sent} echoes to {addr_b}, 0 replies"
    if res.icmp.error:
        sent += f" ({res.icmp.error})"
    if not a.count("nic", "i", addr_a, direction="out"):
        return Finding(src, CHECK, "error", message, hop=f"{src} egress", peer=dst,
                       evidence=f"{sent}; none left {src}'s {a.underlay_dev}" + kernel_drops(a),
                       fix=f"on {src}: `ip route get {addr_b}` and `iptables -S OUTPUT`: "
                           f"let ICMP to {addr_b} out")  # fmt: skip
    if b is None or b.error:
        return Finding(src, CHECK, "error", message, peer=dst,
                       evidence=f"{sent}; {dst} did not report what it saw",
                       fix=f"check ICMP between {addr_a} and {addr_b}")  # fmt: skip
    arrived = b.count("nic", "i", addr_a)
    if not arrived:
        return Finding(src, CHECK, "error", message, hop=f"path {src} -> {dst}", peer=dst,
                       evidence=f"{sent}; they left {src}'s {a.underlay_dev}, {dst}'s "
                                f"{b.underlay_dev} saw none",
                       fix=_path_fix(src, dst, f"ICMP {addr_a} -> {addr_b}"))  # fmt: skip
    if not b.count("nic", "i", addr_a, direction="out", what="reply"):
        return Finding(dst, CHECK, "error", message, hop=f"{dst} input", peer=src,
                       evidence=f"{sent}; {arrived} reached {dst}'s {b.underlay_dev}, none "
                                f"answered" + kernel_drops(b),
                       fix=f"on {dst}: let ICMP echo from {addr_a} in (`iptables -S INPUT`; "
                           f"net.ipv4.icmp_echo_ignore_all=0)")  # fmt: skip
    return None  # B answered: the way back is pair (dst, src)'s business


def _encap(ctx: Context, src: str, dst: str) -> Finding | None:
    a, b = ctx.probes[src], ctx.probes.get(dst)
    res, plane = a.peers.get(dst), ctx.plane
    if res is None or _delivered(ctx, src, dst) in (True, None):
        return None
    addr_a, addr_b = ctx.address(src), ctx.address(dst)
    what = {"vxlan": f"VXLAN frames (udp/{plane.port}, VNI {plane.vni})",
            "udp": f"udp-backend datagrams (udp/{plane.port})"}.get(
            plane.backend, "routed echoes to docker0's .1")  # fmt: skip
    routed = plane.backend == "host-gw"
    message = f"{src}'s {what} do not reach {dst}"
    sent = f"{src} sent {res.encap.sent} to {addr_b}"
    if res.encap.error:
        sent += f" ({res.encap.error})"
    proto = "ICMP" if routed else f"udp/{plane.port}"
    if not a.count("nic", "e", addr_a, direction="out"):
        return Finding(src, CHECK, "error", message, hop=f"{src} egress", peer=dst,
                       evidence=f"{sent}; none left {src}'s {a.underlay_dev}" + kernel_drops(a),
                       fix=f"on {src}: `ip route get {addr_b}` and `iptables -S OUTPUT`: let "
                           f"{proto} to {addr_b} out")  # fmt: skip
    if b is None or b.error:
        return Finding(src, CHECK, "error", message, peer=dst,
                       evidence=f"{sent}, no reply; {dst} did not report what it saw",
                       fix=f"check {proto} between {addr_a} and {addr_b}")  # fmt: skip
    arrived = b.count("nic", "e", addr_a)
    if not arrived:
        return Finding(src, CHECK, "error", message, hop=f"path {src} -> {dst}", peer=dst,
                       evidence=f"{sent}; they left {src}'s {a.underlay_dev}, {dst}'s "
                                f"{b.underlay_dev} saw none",
                       fix=_path_fix(src, dst, f"{proto} {addr_a} -> {addr_b}"))  # fmt: skip
    stats = counter_rises(b, "Udp.NoPorts", "Udp.InErrors", "Udp.InCsumErrors")
    if routed:
        evidence = f"{sent}; {arrived} reached {dst}'s {b.underlay_dev}, no reply" + stats
        fix = f"on {dst}: docker0 must hold its lease's .1 and INPUT let ICMP from {addr_a} in"
    elif not b.overlay_dev:
        evidence = (
            f"{sent}; {arrived} reached {dst}'s {b.underlay_dev}; {dst} has no "
            f"{'flannel0' if plane.backend == 'udp' else f'flannel.{plane.vni}'}" + stats
        )
        fix = f"on {dst}: `systemctl restart overlay-agent` (it makes the device)"
    else:
        other = b.count("overlay", "e", addr_a, direction="other")
        evidence = (f"{sent}; {arrived} reached {dst}'s {b.underlay_dev}, 0 came out of "
                    f"{b.overlay_dev}" + stats)  # fmt: skip
        if other:
            evidence += f"; {other} arrived for another MAC (the VtepMAC in etcd is stale)"
        fix = (f"on {dst}: let udp/{plane.port} from {addr_a} in (`iptables -I INPUT -p udp "
               f"--dport {plane.port} -s {addr_a} -j ACCEPT`)")  # fmt: skip
        facts = ctx.facts.get(dst)
        if facts is not None and facts.firewalld_running:  # an iptables ACCEPT cannot undo it
            fix = (f"on {dst}: let udp/{plane.port} from {addr_a} in through firewalld (the "
                   f"firewall check's finding on {dst} names the rule and its fix)")  # fmt: skip
    return Finding(dst, CHECK, "error", message, hop=f"{dst} input", peer=src,
                   evidence=evidence + kernel_drops(b), fix=fix)  # fmt: skip


def run(ctx: Context) -> list[Finding]:
    findings = []
    for src, dst in ctx.pairs:
        report = ctx.probes.get(src)
        if report is None or report.error:
            continue
        for judge in (_icmp, _encap):
            finding = judge(ctx, src, dst)
            if finding is not None:
                findings.append(finding)
    return findings
