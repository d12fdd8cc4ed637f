"""doctor's probe run for real: doctor_probe.py on two hosts at once, each a network namespace on
a LAN switch (overlayctl.lab.netns) with a kernel VXLAN device set up as the agent sets it
(flannel.1, VNI 1, port 8472, nolearning, neighbour + fdb + onlink route to the peer), then
the checks over what both reported. Faults are injected in the namespaces: a DROP of 8472 in
the receiver's INPUT, the receiver's MTU lowered, 8472 dropped on the switch (the path). The
healthy pair must give no finding; each fault its finding, on the right host and hop. Every
run must leave no tracefs instance, mount or process behind.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl.doctor.checks import checksum, mtu_path, underlay
from overlayctl.doctor.context import Context, DataPlane
from overlayctl.doctor.probes import PROBE, ProbePeer, ProbePlan, ProbeReport, parse_report
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory import parse_inventory
from overlayctl.lab import netns
from tests.conftest import unique_name

pytestmark = pytest.mark.lab

HOSTS = {"n1": ("10.77.0.1", "10.5.1.0/24", "02:00:00:00:01:01"),
         "n2": ("10.77.0.2", "10.5.2.0/24", "02:00:00:00:02:02")}  # fmt: skip
PLANE = DataPlane("vxlan", "10.5.0.0/16", 24, 8472, 1)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout


@dataclass
class Pair:
    switch: str
    ns: dict[str, str]
    ctx: Context
    marker: str = ""

    def probe(self) -> dict[str, ProbeReport]:
        """Both probes at once, as the runner starts them; their reports in ctx.probes."""
        procs = {}
        for name, ns in self.ns.items():
            peer = next(p for p in HOSTS if p != name)
            addr, subnet, mac = HOSTS[name]
            paddr, psubnet, pmac = HOSTS[peer]
            plan = ProbePlan(host=name, address=addr, backend="vxlan", port=8472, vni=1,
                             marker=self.marker, overlay_dev="flannel.1",
                             peers=(ProbePeer(peer, paddr, psubnet[:-3], pmac),),
                             own_overlay_ip=subnet[:-3], own_vtep_mac=mac, overhead=50)  # fmt: skip
            procs[name] = subprocess.Popen(netns.exec_argv(ns, PROBE.argv(plan.to_arg())),
                                           stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.ctx.probes = {n: parse_report(n, p.communicate(timeout=30)[0])
                           for n, p in procs.items()}  # fmt: skip
        return self.ctx.probes

    def findings(self) -> list:
        self.probe()
        return [f for m in (underlay, mtu_path, checksum) for f in m.run(self.ctx)]

    def ns_run(self, host: str, *argv: str) -> str:
        return sh(*netns.exec_argv(self.ns[host], list(argv)))


def _context(tmp_path: Path) -> Context:
    doc = {"cluster": {"name": "t", "network": "10.5.0.0/16", "os": "debian", "backend": "vxlan"},
           "hosts": [{"name": n, "address": a, "roles": ["etcd", "node"]}
                     for n, (a, _, _) in HOSTS.items()]}  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    leases = [LeaseInfo(s, a, "vxlan", 3600, n, vtep_mac=m) for n, (a, s, m) in HOSTS.items()]
    return Context(inv=inv, plane=PLANE, hosts=list(HOSTS), pairs=[("n1", "n2"), ("n2", "n1")],
                   leases=leases, leases_known=True)  # fmt: skip


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    name = unique_name("dp")
    switch, spaces = f"{name}-sw", {h: f"{name}-{h}" for h in HOSTS}
    try:
        netns.create_switch(switch)
        for host, ns in spaces.items():
            netns.add(ns)
            netns.attach(switch, f"p-{host}", ns, f"{HOSTS[host][0]}/24")
        for host, ns in spaces.items():
            addr, subnet, mac = HOSTS[host]
            peer = next(p for p in HOSTS if p != host)
            paddr, psubnet, pmac = HOSTS[peer]
            for argv in (
                ["link", "add", "flannel.1", "address", mac, "type", "vxlan", "id", "1", "local",
                 addr, "dev", "eth0", "dstport", "8472", "nolearning"],
                ["addr", "add", subnet.replace("0/24", "0/32"), "dev", "flannel.1"],
                ["link", "set", "flannel.1", "mtu", "1450", "up"],
                ["neigh", "add", psubnet[:-3], "lladdr", pmac, "dev", "flannel.1", "nud",
                 "permanent"],
                ["route", "add", psubnet, "via", psubnet[:-3], "dev", "flannel.1", "onlink"],
            ):  # fmt: skip
                sh("ip", "-n", ns, *argv)
            sh("bridge", "-n", ns, "fdb", "append", pmac, "dev", "flannel.1", "dst", paddr)
        yield Pair(switch, spaces, _context(tmp_path), secrets.token_hex(8))
    finally:
        for ns in [*spaces.values(), switch]:
            netns.delete(ns)


def _tracefs_left() -> list[str]:
    """tracefs mounts here, and instances a probe made (none may stay)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    inst = Path("/sys/kernel/tracing/instances")
    made = (
        [p.name for p in inst.iterdir() if p.name.startswith("overlayctl-")]
        if inst.exists()
        else []
    )
    return [line for line in mounts if " - tracefs " in line] + made


def _probe_processes(marker: str) -> list[str]:
    """Processes of this run's probes (their argument holds the marker)."""
    return [line for line in sh("ps", "-eo", "pid,args").splitlines() if marker in line]


def test_a_healthy_pair_has_no_finding_and_everything_arrived_where_expected(pair: Pair) -> None:
    before = _tracefs_left()
    reports = pair.probe()
    for name, report in reports.items():
        assert not report.error and not report.problems, (name, report)
        peer = next(p for p in HOSTS if p != name)
        res = report.peers[peer]
        assert res.icmp.replies == 3 and res.encap.replies == 3 and res.mtu.ok, res
        other = HOSTS[peer][0]
        assert report.count("nic", "e", other) == 3  # the peer's VXLAN frames on our eth0
        assert report.count("overlay", "e", other) == 3  # ... decapsulated onto flannel.1
        assert report.count("nic", "e", HOSTS[name][0], direction="out") == 3  # ours left
        assert report.offload_source == "ioctl" and "tx-checksum-ip-generic" in report.offloads
        assert report.trace_used, report.trace_why  # root namespace kernel 6.18: tracefs
        assert report.elapsed_s < 5
    assert [f for m in (underlay, mtu_path, checksum) for f in m.run(pair.ctx)] == []
    assert _tracefs_left() == before  # instance removed, tracefs unmounted as found
    assert _probe_processes(pair.marker) == []


def test_a_firewall_drop_of_8472_on_the_receiver_is_its_input(pair: Pair) -> None:
    pair.ns_run("n2", "iptables", "-w", "5", "-I", "INPUT", "-p", "udp", "--dport", "8472",
                "-j", "DROP")  # fmt: skip
    findings = pair.findings()
    found = [(f.check, f.host, f.peer, f.hop) for f in findings]
    assert found == [("underlay", "n2", "n1", "n2 input")], findings
    evidence = findings[0].evidence
    assert "3 reached n2's eth0, 0 came out of flannel.1" in evidence
    assert "NETFILTER_DROP" in evidence  # the kernel's word, from tracefs
    assert "iptables -I INPUT -p udp --dport 8472 -s 10.77.0.1 -j ACCEPT" in findings[0].fix


def test_8472_dropped_between_the_hosts_is_the_path(pair: Pair) -> None:
    # On the switch, the port from n1: after n1's NIC, before n2's. (This kernel has no gact
    # "drop" action: the frames go to the switch namespace's own loopback, where they die.)
    sh("tc", "-n", pair.switch, "qdisc", "add", "dev", "p-n1", "ingress")
    sh("tc", "-n", pair.switch, "filter", "add", "dev", "p-n1", "parent", "ffff:", "protocol",
       "ip", "u32", "match", "ip", "dport", "8472", "0xffff",
       "action", "mirred", "egress", "redirect", "dev", "lo")  # fmt: skip
    findings = pair.findings()
    assert [(f.check, f.host, f.peer, f.hop) for f in findings] == [
        ("underlay", "n1", "n2", "path n1 -> n2")], findings  # fmt: skip
    assert "they left n1's eth0, n2's eth0 saw none" in findings[0].evidence


def test_a_lowered_mtu_on_the_receiver_is_found_with_the_path_mtu(pair: Pair) -> None:
    pair.ns_run("n2", "ip", "link", "set", "eth0", "mtu", "1400")
    findings = pair.findings()
    mtu = [f for f in findings if f.check == "mtu"]
    assert [(f.host, f.peer, f.hop) for f in mtu] == [("n1", "n2", "path n1 -> n2")], findings
    # veth takes up to MTU + 4 (room for a VLAN tag): the path carries 1400 to 1404 bytes.
    assert re.search(r"carries 140[0-4] bytes, the overlay needs 1500 \(MTU 1450", mtu[0].message)
    assert "on n2: `ip link set dev eth0 mtu 1500` (it has 1400)" in mtu[0].fix
    assert not [f for f in findings if f.check == "underlay"]  # small packets still pass


def test_a_missing_vxlan_device_on_the_receiver_is_its_input(pair: Pair) -> None:
    pair.ns_run("n2", "ip", "link", "del", "flannel.1")
    findings = [f for f in pair.findings() if f.host == "n2" and f.peer == "n1"]
    assert [(f.check, f.hop) for f in findings] == [("underlay", "n2 input")], findings
    assert "n2 has no flannel.1" in findings[0].evidence
    assert "n2 Udp.NoPorts +" in findings[0].evidence  # nothing listens on 8472 there
