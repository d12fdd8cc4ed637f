"""The per-host half of `status` without hosts: `parse` on what its script prints on a host,
and `problems`, the words each unhealthy state is reported with.

The outputs are those of the real script (host-status.sh): `systemctl is-active`, the
/readyz status code (0 when nothing answers), subnet.env's values, `ip -4 -o addr` for docker0
and `ip -4 route show`, one key=value per line.
"""

from __future__ import annotations

import pytest

from overlayctl.actions.status import HostStatus, Route, missing_routes, parse
from overlayctl.etcd.cluster import LeaseInfo

NETWORK = "172.21.0.0/16"
OWN = "172.21.81.0/24"
PEERS = [
    LeaseInfo("172.21.23.0/24", "192.168.255.156", "vxlan", 86000, "node3"),
    LeaseInfo("172.21.89.0/24", "192.168.255.155", "vxlan", 86000, "node2"),
]


def output(
    *,
    active: str = "active",
    ready: str = "200",
    env: tuple[str, str] | None = ("172.21.81.1/24", "1450"),
    docker: str = "active",
    docker0: str = "172.21.81.1/24",
    routes: tuple[str, ...] = (
        "172.21.23.0/24 via 172.21.23.0 dev flannel.1 onlink",
        "172.21.89.0/24 via 172.21.89.0 dev flannel.1 onlink",
    ),
) -> str:
    """The script's output on node1 (192.168.255.154, lease 172.21.81.0/24)."""
    lines = [f"agent_active={active}", f"agent_ready={ready}"]
    if env is not None:  # subnet.env readable
        lines += [f"lease={env[0]}", f"mtu={env[1]}"]
    lines += [f"docker_active={docker}", f"docker0={docker0}"]
    lines += [
        "route=default via 192.168.255.1 dev eth0",
        *(f"route={r}" for r in routes),
        "route=172.21.81.0/24 dev docker0 proto kernel scope link src 172.21.81.1",
        "route=192.168.255.0/24 dev eth0 proto kernel scope link src 192.168.255.154",
    ]
    return "\n".join(lines) + "\n"


def test_a_healthy_vxlan_host() -> None:
    st = parse("node1", output(), PEERS, "vxlan", NETWORK)
    assert st == HostStatus(
        "node1", agent_active=True, agent_ready=True, docker_active=True,
        lease="172.21.81.1/24", mtu=1450, docker0="172.21.81.1/24", missing_routes=[],
    )  # fmt: skip
    assert (st.bip_ok, st.healthy, st.problems) == (True, True, [])


@pytest.mark.parametrize("state", ["inactive", "failed", "activating"])
def test_agent_not_active(state: str) -> None:
    """Stopped or crashed: /readyz does not answer (0); subnet.env and the routes stay."""
    st = parse("node1", output(active=state, ready="0"), PEERS, "vxlan", NETWORK)
    assert (st.agent_active, st.agent_ready) == (False, False)
    assert st.problems == ["overlay-agent is not running"]  # not also "not ready"


def test_agent_active_but_not_ready() -> None:
    st = parse("node1", output(ready="503"), PEERS, "vxlan", NETWORK)
    assert (st.agent_active, st.agent_ready) == (True, False)
    assert st.problems == ["overlay-agent is not ready (/readyz)"]


@pytest.mark.parametrize("docker0", ["172.17.0.1/16", ""])
def test_no_subnet_env_yet(docker0: str) -> None:
    """No lease: docker0 cannot be right, whatever it is (also when both are empty)."""
    st = parse("node1", output(env=None, docker0=docker0), PEERS, "vxlan", NETWORK)
    assert (st.lease, st.mtu, st.bip_ok) == ("", None, False)
    assert st.problems == ["no lease in subnet.env"]


@pytest.mark.parametrize("mtu", ["", "$FLANNEL_MTU"])
def test_subnet_env_without_a_usable_mtu(mtu: str) -> None:
    st = parse("node1", output(env=("172.21.81.1/24", mtu)), PEERS, "vxlan", NETWORK)
    assert (st.lease, st.mtu) == ("172.21.81.1/24", None)


def test_docker0_missing() -> None:
    st = parse("node1", output(docker0=""), PEERS, "vxlan", NETWORK)
    assert (st.docker0, st.bip_ok) == ("", False)
    assert st.problems == ["docker0 is missing, not the lease's 172.21.81.1/24"]


def test_docker0_on_another_subnet() -> None:
    """docker started before the agent, on its default bridge: not on the overlay."""
    st = parse("node1", output(docker0="172.17.0.1/16"), PEERS, "vxlan", NETWORK)
    assert (st.docker0, st.bip_ok) == ("172.17.0.1/16", False)
    assert st.problems == ["docker0 is 172.17.0.1/16, not the lease's 172.21.81.1/24"]


def test_docker_stopped() -> None:
    st = parse("node1", output(docker="inactive"), PEERS, "vxlan", NETWORK)
    assert st.docker_active is False
    assert st.problems == ["docker is not running"]


def test_vxlan_routes_missing_or_not_on_the_vxlan_device() -> None:
    """node2's route is absent, node3's goes out eth0 (someone else's route): both missing."""
    routes = ("172.21.23.0/24 via 192.168.255.156 dev eth0",)
    st = parse("node1", output(routes=routes), PEERS, "vxlan", NETWORK)
    assert st.missing_routes == ["172.21.23.0/24", "172.21.89.0/24"]
    assert st.problems == ["missing routes to 172.21.23.0/24, 172.21.89.0/24"]


def test_everything_wrong_at_once_is_listed_in_order() -> None:
    text = output(active="inactive", ready="0", docker="inactive", docker0="", routes=())
    st = parse("node1", text, PEERS, "vxlan", NETWORK)
    assert st.problems == [
        "overlay-agent is not running",
        "docker is not running",
        "docker0 is missing, not the lease's 172.21.81.1/24",
        "missing routes to 172.21.23.0/24, 172.21.89.0/24",
    ]


def test_the_own_lease_and_unreadable_leases_need_no_route() -> None:
    peers = [
        *PEERS,
        LeaseInfo(OWN, "192.168.255.154", "vxlan", 86000, "node2"),  # a duplicate of our subnet
        LeaseInfo("172.21.99.0-24", "", "", None, None, "not JSON: Expecting value"),
    ]
    assert parse("node1", output(), peers, "vxlan", NETWORK).missing_routes == []


def test_a_host_that_could_not_be_checked_reports_only_why() -> None:
    st = HostStatus("node4", error="node4 (192.168.255.157): SSH port 22 unreachable: timed out")
    assert st.problems == ["node4 (192.168.255.157): SSH port 22 unreachable: timed out"]
    assert st.healthy is False


# --- routes per backend -------------------------------------------------------------------------

HOSTGW_PEERS = [
    LeaseInfo("172.21.23.0/24", "192.168.255.156", "host-gw", 86000, "node3"),
    LeaseInfo("172.21.89.0/24", "192.168.255.155", "host-gw", 86000, "node2"),
]


def test_host_gw_needs_each_route_via_the_peer_s_public_ip() -> None:
    routes = (
        "172.21.23.0/24 via 192.168.255.156 dev eth0",
        "172.21.89.0/24 via 192.168.255.1 dev eth0",  # via the router, not node2
    )
    st = parse("node1", output(routes=routes), HOSTGW_PEERS, "host-gw", NETWORK)
    assert st.missing_routes == ["172.21.89.0/24"]


def test_udp_needs_one_network_route_on_flannel0() -> None:
    whole = ("172.21.0.0/16 dev flannel0 proto kernel scope link src 172.21.81.0",)
    assert parse("node1", output(routes=whole), PEERS, "udp", NETWORK).missing_routes == []
    st = parse("node1", output(routes=()), PEERS, "udp", NETWORK)
    assert st.missing_routes == [NETWORK]
    on_eth0 = ("172.21.0.0/16 dev eth0",)
    assert parse("node1", output(routes=on_eth0), PEERS, "udp", NETWORK).missing_routes == [NETWORK]
    assert parse("node1", output(routes=()), [], "udp", NETWORK).missing_routes == []  # alone


def test_unknown_backend_accepts_any_route_per_subnet() -> None:
    routes = ("172.21.23.0/24 via 192.168.255.156 dev eth0",)
    st = parse("node1", output(routes=routes), PEERS, None, None)
    assert st.missing_routes == ["172.21.89.0/24"]


def test_route_parse() -> None:
    assert Route.parse("172.21.5.0/24 via 172.21.5.0 dev flannel.1 onlink") == Route(
        "172.21.5.0/24", "flannel.1", "172.21.5.0"
    )
    assert Route.parse("172.21.0.0/16 dev flannel0 proto kernel scope link") == Route(
        "172.21.0.0/16", "flannel0", ""
    )
    assert missing_routes("udp", None, [], PEERS) == ["the network route"]


def test_its_own_lease_on_the_configured_backend_is_healthy() -> None:
    mine = LeaseInfo(OWN, "192.168.255.154", "vxlan", 86000, "node1")
    st = parse("node1", output(), [*PEERS, mine], "vxlan", NETWORK)
    assert st.stale_backend is None and st.healthy, st.problems


def test_a_lease_on_another_backend_than_the_config_names_an_agent_not_restarted() -> None:
    """A config change whose run stopped before this agent restarted: etcd already holds the
    new config (a re-run sees no change), the agent still runs, and leases, the old backend."""
    mine = LeaseInfo(OWN, "192.168.255.154", "udp", 86000, "node1")
    st = parse("node1", output(), [*PEERS, mine], "vxlan", NETWORK)
    assert st.stale_backend == ("udp", "vxlan")
    assert st.problems == [
        "its lease says backend udp, the network config vxlan: its agent has not restarted "
        "since the config changed (restart overlay-agent there)"
    ]
