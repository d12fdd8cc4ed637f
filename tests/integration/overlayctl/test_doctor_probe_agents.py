"""doctor's probes against real agents of the backends whose probe is not a kernel VXLAN frame:
udp (flannel's datagram format, and our Batching mode) and host-gw (an echo routed to the
peer's docker0). Two light-lab hosts run the agent (tests/dataplane_driver.py) with a container
each; the plan is made by plan_probes from etcd-like leases, the probe script runs on both at
once, and the checks read both reports. Healthy: every probe arrives where the backend
delivers it and no finding. A DROP on the receiver: `underlay` at "<receiver> input"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from overlayctl.doctor.checks import checksum, mtu_path, underlay
from overlayctl.doctor.context import Context, DataPlane
from overlayctl.doctor.probes import PROBE, parse_report, plan_probes
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory import parse_inventory
from tests.dataplane_driver import Cluster

pytestmark = pytest.mark.lab

CASES = {
    "udp": ({"Type": "udp"}, DataPlane("udp", "10.5.0.0/16", 24, 8285, None)),
    "udp-batching": (
        {"Type": "udp", "Batching": True},
        DataPlane("udp", "10.5.0.0/16", 24, 8285, None),
    ),
    "host-gw": ({"Type": "host-gw"}, DataPlane("host-gw", "10.5.0.0/16", 24, None, None)),
}


def _context(tmp_path: Path, cluster: Cluster, plane: DataPlane) -> Context:
    doc = {"cluster": {"name": "t", "network": plane.network, "os": "debian",
                       "backend": plane.backend},
           "hosts": [{"name": n.host.name, "address": n.host.address, "roles": ["etcd", "node"]}
                     for n in cluster.nodes]}  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    leases = [LeaseInfo(n.subnet, n.host.address, plane.backend, 3600, n.host.name)
              for n in cluster.nodes]  # fmt: skip
    names = [n.host.name for n in cluster.nodes]
    pairs = [(a, b) for a in names for b in names if a != b]
    return Context(inv=inv, plane=plane, hosts=names, pairs=pairs, leases=leases,
                   leases_known=True)  # fmt: skip


def _probe(cluster: Cluster, ctx: Context) -> list:
    """Every host's probe at once, as the runner starts them; the three probe checks' findings."""
    plans = plan_probes(ctx)
    procs = {n.host.name: n.host.popen(PROBE.argv(plans[n.host.name].to_arg()),
                                       stdout=subprocess.PIPE, text=True)
             for n in cluster.nodes}  # fmt: skip
    ctx.probes = {name: parse_report(name, p.communicate(timeout=30)[0])
                  for name, p in procs.items()}  # fmt: skip
    for name, report in ctx.probes.items():
        assert not report.error, (name, report.error)
    return [f for m in (underlay, mtu_path, checksum) for f in m.run(ctx)]


@pytest.mark.parametrize("case", list(CASES))
def test_probes_cross_a_real_agent_and_a_drop_is_the_receivers_input(
    light_lab, tmp_path: Path, case: str
) -> None:
    backend, plane = CASES[case]
    with Cluster(light_lab, plane.backend, count=2) as cluster:
        cluster.config["Backend"] = backend
        h1, h2 = cluster.nodes
        cluster.start_all()
        cluster.mesh()
        ctx = _context(tmp_path, cluster, plane)
        assert _probe(cluster, ctx) == []
        for node, peer in ((h1, h2), (h2, h1)):
            report = ctx.probes[node.host.name]
            assert report.count("nic", "e", peer.host.address) == 3, report
            if plane.backend == "udp":  # the agent wrote the inner packet to its TUN
                assert report.count("overlay", "e", peer.host.address) == 3, report
        # The receiver drops the backend's traffic from its peer: 8285 for udp, the routed
        # echo to docker0 for host-gw.
        match = (["-p", "udp", "--dport", "8285"] if plane.backend == "udp"
                 else ["-p", "icmp", "-d", h2.gateway])  # fmt: skip
        rule = ["INPUT", "-s", h1.host.address, *match, "-j", "DROP"]
        h2.host.run(["iptables", "-w", "5", "-I", *rule])
        try:
            found = [(f.check, f.host, f.peer, f.hop) for f in _probe(cluster, ctx)]
        finally:
            h2.host.run(["iptables", "-w", "5", "-D", *rule])
        assert ("underlay", "h2", "h1", "h2 input") in found, found
        assert all(f[1] == "h2" and f[2] == "h1" for f in found), found
