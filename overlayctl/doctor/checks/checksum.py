"""`checksum`: the receiving host counted UDP checksum errors (/proc/net/snmp Udp InCsumErrors)
during the probe while a peer's encapsulated probes reached its NIC and not its overlay
device: the peer's packets are corrupted on the way, typically by a transmit checksum offload
that fills in a wrong checksum (flannel #1279, #1282). The fix names the sender's offload that
is on (read with SIOCETHTOOL by the probe). A rise with every peer's probes delivered is a
warning about other traffic.
"""

from __future__ import annotations

from overlayctl.doctor.checks.underlay import kernel_drops
from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding
from overlayctl.doctor.probes import ProbeReport

CHECK = "checksum"
# The tx checksum features ethtool can turn off, the most likely culprit first.
TX_FEATURES = ("tx-checksum-ip-generic", "tx-checksum-ipv4")


def _offload(report: ProbeReport | None) -> tuple[str, str]:
    """(evidence, the feature on) for the sender's underlay device."""
    if report is None or report.error:
        return "its offloads are unknown (no report)", ""
    if not report.offload_source:
        return f"its offloads are unknown ({report.offload_error})", ""
    on = [f for f in TX_FEATURES if report.offloads.get(f)]
    state = ", ".join(f"{f} {'on' if report.offloads.get(f) else 'off'}" for f in TX_FEATURES
                      if f in report.offloads)  # fmt: skip
    return f"{report.host}'s {report.underlay_dev}: {state or 'no tx checksum feature'}", \
        (on[0] if on else "")  # fmt: skip


def run(ctx: Context) -> list[Finding]:
    findings = []
    delivered_hop = "nic" if ctx.plane.backend == "host-gw" else "overlay"
    for host in ctx.hosts:
        b = ctx.probes.get(host)
        rose = b.deltas.get("Udp.InCsumErrors", 0) if b is not None and not b.error else 0
        if rose <= 0:
            continue
        culprits = []
        for src, dst in ctx.pairs:
            if dst != host:
                continue
            addr = ctx.address(src)
            arrived = b.count("nic", "e", addr)
            if arrived and not b.count(delivered_hop, "e", addr):
                culprits.append((src, arrived))
        for src, arrived in culprits:
            a = ctx.probes.get(src)
            state, feature = _offload(a)
            dev = a.underlay_dev if a is not None and a.underlay_dev else "<underlay device>"
            fix = (f"on {src}: `ethtool -K {dev} {feature} off`" if feature else
                   f"the corruption is on the way from {src} to {host} (its tx checksum offload "
                   f"is off): check the NICs and the hypervisor between them")  # fmt: skip
            findings.append(Finding(
                host, CHECK, "error",
                f"{host} drops {src}'s tunnel packets with bad UDP checksums",
                evidence=f"Udp InCsumErrors +{rose} on {host} during the probe; {src}'s probes: "
                         f"{arrived} on {host}'s {b.underlay_dev}, 0 delivered; {state}"
                         + kernel_drops(b),
                fix=fix, peer=src, hop=f"{host} input",
            ))  # fmt: skip
        if not culprits:
            findings.append(Finding(
                host, CHECK, "warning",
                f"{host} counted {rose} UDP checksum errors during the probe (not the probes)",
                evidence=f"Udp InCsumErrors +{rose}; every peer's probe was delivered",
                fix=f"on the senders to {host}: `ethtool -k <dev> | grep tx-checksum`; turn a "
                    f"faulty offload off with `ethtool -K <dev> tx-checksum-ip-generic off`",
            ))  # fmt: skip
    return findings
