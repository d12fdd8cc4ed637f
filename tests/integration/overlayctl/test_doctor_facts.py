"""doctor's facts script run for real, in network namespaces of the test's own: a host with a
veth underlay, a kernel VXLAN device flannel.1 with a peer's route, neighbour and fdb entry
(as the agent installs them), docker0's address, an iptables rule dropping the peer's VXLAN
port and strict rp_filter with a stray route that makes the kernel refuse the peer's subnet on
flannel.1. The script's JSON must show all of it, the checks must name the faults from it, and
the script must leave the namespace exactly as it found it (rules, routes, neighbours, fdb,
sysctls)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.doctor.checks import firewall, forwarding, routes, rp_filter
from overlayctl.doctor.context import Context
from overlayctl.doctor.dataplane import data_plane
from overlayctl.doctor.facts import SCRIPT, parse_facts, script_params
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory import parse_inventory
from tests.conftest import unique_name

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("iptables-save") is None, reason="no iptables here"),
]
HOST, PEER = "10.250.0.1", "10.250.0.2"
PEER_MAC = "5e:11:22:33:44:55"
SETUP = f"""
ip link set lo up
ip link set eth0 up
ip addr add {HOST}/24 dev eth0
ip link add flannel.1 type vxlan id 1 dev eth0 local {HOST} dstport 8472 nolearning
ip link set flannel.1 mtu 1450 up
ip addr add 172.21.5.0/32 dev flannel.1
ip link add docker0 type bridge
ip link set docker0 mtu 1450 up
ip addr add 172.21.5.1/24 dev docker0
ip route add 172.21.9.0/24 via 172.21.9.0 dev flannel.1 onlink
ip neigh add 172.21.9.0 lladdr {PEER_MAC} dev flannel.1 nud permanent
bridge fdb append {PEER_MAC} dev flannel.1 dst {PEER}
ip route add 172.21.9.0/25 via {PEER} dev eth0
sysctl -qw net.ipv4.conf.all.rp_filter=1
iptables -A INPUT -s {PEER}/32 -p udp -m udp --dport 8472 -j DROP
"""
SNAPSHOT = """iptables-save | grep -v '^#'; ip6tables-save | grep -v '^#'; ip -d route show table all
ip neigh show; bridge fdb show dev flannel.1; ip link show; ip -d link show dev flannel.1
for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/rp_filter; do echo "$f $(cat $f)"; done
"""  # noqa: E501


def in_ns(ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=60, check=False, **kw)  # fmt: skip


@pytest.fixture
def host_ns() -> Iterator[str]:
    host, peer = unique_name("dfh"), unique_name("dfp")
    for ns in (host, peer):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", "eth0", "netns", host, "type", "veth", "peer",
                        "name", "eth0", "netns", peer], check=True)  # fmt: skip
        in_ns(peer, ["sh", "-ec", f"ip link set eth0 up; ip addr add {PEER}/24 dev eth0"])
        done = in_ns(host, ["sh", "-ec", SETUP])
        assert done.returncode == 0, done.stderr
        yield host
    finally:
        for ns in (host, peer):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def context(tmp_path: Path) -> Context:
    spec = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian"},
        "hosts": [{"name": "host", "address": HOST}, {"name": "peer", "address": PEER}],
    }
    inv, _ = parse_inventory(spec, tmp_path, source=tmp_path / "cluster.yaml")
    config = {"Network": "172.21.0.0/16", "Backend": {"Type": "vxlan"}}
    leases = [
        LeaseInfo("172.21.5.0/24", HOST, "vxlan", 86000, "host", vtep_mac="5e:00:00:00:00:01"),
        LeaseInfo("172.21.9.0/24", PEER, "vxlan", 86000, "peer", vtep_mac=PEER_MAC),
    ]
    return Context(inv=inv, plane=data_plane(config, inv), hosts=["host"], pairs=[],
                   leases=leases, leases_known=True, network_config=config)  # fmt: skip


def test_the_facts_script_sees_the_faults_and_changes_nothing(host_ns: str, tmp_path: Path):
    ctx = context(tmp_path)
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text("FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET=172.21.5.1/24\n"
                          "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")  # fmt: skip
    params = script_params(ctx.inv.hosts[0], ctx.plane, ctx.leases)
    params = params.replace("/run/flannel/subnet.env", str(subnet_env))
    before = in_ns(host_ns, ["sh", "-c", SNAPSHOT]).stdout
    out = in_ns(host_ns, SCRIPT.argv(params))
    after = in_ns(host_ns, ["sh", "-c", SNAPSHOT]).stdout
    assert out.returncode == 0, out.stderr
    assert after == before  # nothing changed: rules, routes, neighbours, fdb, links, sysctls

    f = parse_facts("host", out.stdout)
    assert f.error == ""
    vxlan = f.link("flannel.1")["linkinfo"]
    assert (vxlan["info_kind"], vxlan["info_data"]["id"], vxlan["info_data"]["port"]) == (
        "vxlan", 1, 8472)  # fmt: skip
    assert f.fdb["flannel.1"][0]["mac"] == PEER_MAC and f.fdb["flannel.1"][0]["dst"] == PEER
    assert {"dst": "172.21.9.0/24", "gateway": "172.21.9.0", "dev": "flannel.1"}.items() <= next(
        r for r in f.routes if r["dst"] == "172.21.9.0/24"
    ).items()
    assert f.address_of("docker0") == ["172.21.5.1/24"] and f.device_with(HOST) == "eth0"
    assert f.subnet_env["FLANNEL_MTU"] == "1450"
    assert (
        f.sysctl["net.ipv4.conf.all.rp_filter"] == "1" and f.sysctl_int("net.ipv4.ip_forward") == 0
    )
    (drop,) = f.iptables["filter"]["INPUT"].rules
    assert drop.text == f"-A INPUT -s {PEER}/32 -p udp -m udp --dport 8472 -j DROP"
    refused = next(g for g in f.route_gets if g.kind == "rp-overlay")
    assert refused.args == ("172.21.5.1", "from", "172.21.9.1", "iif", "flannel.1")
    assert refused.error == "RTNETLINK answers: Invalid argument"  # kernel 6.18, a local dst
    assert f.elapsed_s < 10

    ctx.facts["host"] = f
    got = {(x.check, x.peer, x.severity) for c in (firewall, forwarding, routes, rp_filter)
           for x in c.run(ctx)}  # fmt: skip
    assert got == {
        ("firewall", "peer", "error"),  # 8472/udp from the peer dropped in INPUT
        ("forwarding", None, "error"),  # a new namespace's ip_forward is 0
        ("routes", None, "warning"),  # 172.21.9.0/25: no lease has it
        ("rp_filter", "peer", "error"),  # strict, and the way back to 172.21.9.1 is eth0
    }
    # The refusal is rp_filter's: loose mode lets the same lookup through.
    in_ns(host_ns, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"])
    loose = parse_facts("host", in_ns(host_ns, SCRIPT.argv(params)).stdout)
    ctx.facts["host"] = loose
    assert next(g for g in loose.route_gets if g.kind == "rp-overlay").error == ""
    assert rp_filter.run(ctx) == []
