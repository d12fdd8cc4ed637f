"""`status` expects the routes each backend really installs (issue #16: udp was reported as
missing every peer route though its one network route covers them), and counts a stopped
docker as unhealthy (its docker0 outlives it)."""

from __future__ import annotations

import pytest

from overlayctl.actions.status import Route, missing_routes, parse
from overlayctl.etcd.cluster import LeaseInfo

PEERS = [
    LeaseInfo("172.21.31.0/24", "192.168.255.155", "udp", 86000, "node2"),
    LeaseInfo("172.21.40.0/24", "192.168.255.156", "udp", 86000, "node3"),
]
NETWORK = "172.21.0.0/16"


def routes(*lines: str) -> list[Route]:
    return [Route.parse(line) for line in lines]


def test_route_lines_parse() -> None:
    assert Route.parse("172.21.5.0/24 via 172.21.5.0 dev flannel.1 onlink") == Route(
        "172.21.5.0/24", "flannel.1", "172.21.5.0"
    )
    assert Route.parse("172.21.0.0/16 dev flannel0 scope link") == Route(
        "172.21.0.0/16", "flannel0", ""
    )


def test_udp_one_network_route_covers_every_peer() -> None:
    assert missing_routes("udp", NETWORK, routes("172.21.0.0/16 dev flannel0"), PEERS) == []
    assert missing_routes("udp", NETWORK, routes("default via 10.0.0.1 dev eth0"), PEERS) == [
        NETWORK
    ]
    # The network routed elsewhere (say docker's bridge) is not the agent's route.
    assert missing_routes("udp", NETWORK, routes("172.21.0.0/16 dev docker0"), PEERS) == [NETWORK]


def test_vxlan_wants_each_peer_onlink_on_the_vxlan_device() -> None:
    have = routes("172.21.31.0/24 via 172.21.31.0 dev flannel.1 onlink",
                  "172.21.40.0/24 via 192.168.255.156 dev eth0")  # fmt: skip
    assert missing_routes("vxlan", NETWORK, have, PEERS) == ["172.21.40.0/24"]


def test_host_gw_wants_each_peer_via_its_public_ip() -> None:
    have = routes("172.21.31.0/24 via 192.168.255.155 dev eth0",
                  "172.21.40.0/24 via 172.21.40.0 dev flannel.1 onlink")  # fmt: skip
    assert missing_routes("host-gw", NETWORK, have, PEERS) == ["172.21.40.0/24"]


SCRIPT_OUTPUT = """agent_active=active
agent_ready=200
lease=172.21.16.1/24
mtu=1472
docker_active={docker}
docker0=172.21.16.1/24
route=default via 192.168.255.2 dev eth0
route=172.21.0.0/16 dev flannel0
route=172.21.16.0/24 dev docker0 proto kernel scope link src 172.21.16.1
"""


@pytest.mark.parametrize("docker", ["active", "inactive"])
def test_the_seed_udp_case_is_healthy_unless_docker_stopped(docker: str) -> None:
    st = parse("node1", SCRIPT_OUTPUT.format(docker=docker), PEERS, "udp", NETWORK)
    assert st.missing_routes == []
    assert st.bip_ok  # docker0 keeps its address after docker stops ...
    assert st.healthy is (docker == "active")  # ... so docker's own state decides
    assert st.problems == ([] if docker == "active" else ["docker is not running"])


def test_vxlan_peers_need_their_fdb_entry_and_the_host_its_lease() -> None:
    """A deleted fdb entry or a lease gone from etcd: named, not healthy (issue #16)."""
    peers = [
        LeaseInfo("172.21.31.0/24", "192.168.255.155", "vxlan", 86000, "node2",
                  vtep_mac="0a:00:00:00:00:02"),
        LeaseInfo("172.21.40.0/24", "192.168.255.156", "vxlan", 86000, "node3",
                  vtep_mac="0a:00:00:00:00:03"),
    ]  # fmt: skip
    text = "\n".join([
        "agent_active=active", "agent_ready=200", "docker_active=active",
        "lease=172.21.16.1/24", "docker0=172.21.16.1/24",
        "route=172.21.31.0/24 via 172.21.31.0 dev flannel.1 onlink",
        "route=172.21.40.0/24 via 172.21.40.0 dev flannel.1 onlink",
        "fdb=0a:00:00:00:00:02 dst 192.168.255.155 self permanent",
        "fdb=0a:00:00:00:00:03 dst 192.168.255.99 self permanent",  # wrong destination
    ])  # fmt: skip
    st = parse("node1", text, peers, "vxlan", NETWORK, own_leases=["172.21.16.0/24"])
    assert st.missing_fdb == ["172.21.40.0/24"] and st.missing_routes == []
    assert st.problems == ["missing fdb entries for 172.21.40.0/24"]
    gone = parse("node1", text, peers, "vxlan", NETWORK, own_leases=[])
    assert "its lease 172.21.16.1/24 is not in etcd (deleted or expired)" in gone.problems
    unknown = parse("node1", text, peers, "vxlan", NETWORK, own_leases=None)
    assert unknown.lease_in_etcd  # etcd did not answer: no verdict on it
