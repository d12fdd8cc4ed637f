"""Hostile values in etcd meet the real overlay-agent process (issue 6, bad input from etcd).

The helper-level behaviour is covered elsewhere (SubnetWatcher keeps the last good value of a
garbage lease: tests/integration/agent/test_watch.py; parse_config refuses bad configs:
tests/unit/agent/test_network_config.py).
Here the whole process meets them after it was ready, in a light lab host with the real vxlan
backend, as in test_process.py (etcd on the machine's 127.0.0.1 through a loopback relay):
it logs, skips or keeps its last good state, in etcd and in the kernel (read back with ``ip``),
stays ready, and never exits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agent.etcd import EtcdClient
from overlayctl.lab.light import LightLab
from tests.integration.agent.test_process import (
    CONFIG,
    AgentHost,
    AgentProc,
    http_get,
    routed_peers,
    vxlan_device,
    vxlan_lease,
    wait_for,
)
from tests.integration.conftest import EtcdServer

pytestmark = pytest.mark.lab

PEER_IP = "10.99.7.1"
PEER_SUBNET = "10.5.200.0/24"
PEER_MAC = "0a:00:00:00:02:00"


@pytest.fixture
def node(light_lab: LightLab, etcd_server: EtcdServer) -> Iterator[AgentHost]:
    made = AgentHost(light_lab, "a", etcd_server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def agent(node: AgentHost, etcd: EtcdClient, prefix: str) -> Iterator[AgentProc]:
    """One ready agent with a peer lease it already routes."""
    etcd.put(prefix + "/config", CONFIG)
    proc = AgentProc(node, prefix, "--conflict-check-interval=1s")
    try:
        proc.start().wait_ready()
        lease_id, _ = etcd.lease_grant(120)
        peer = vxlan_lease(PEER_IP, PEER_MAC)
        etcd.put(prefix + "/subnets/10.5.200.0-24", peer, lease_id)
        wait_for(lambda: routed_peers(proc.host) == {PEER_SUBNET: PEER_IP}, what="peer routed")
        yield proc
    finally:
        proc.kill()


def alive_and_ready(agent: AgentProc) -> bool:
    assert agent.proc is not None
    return (
        agent.proc.poll() is None and agent.ready() and http_get(agent.port, "/healthz")[0] == 200
    )


def own_key(etcd: EtcdClient, prefix: str, public_ip: str) -> str | None:
    kvs, _ = etcd.get_prefix(prefix + "/subnets/")
    for kv in kvs:
        try:
            if json.loads(kv.value).get("PublicIP") == public_ip:
                return kv.key
        except (ValueError, AttributeError):
            continue
    return None


def test_lease_values_that_are_not_leases_are_logged_and_skipped(
    agent: AgentProc, etcd: EtcdClient, prefix: str
) -> None:
    subnets = prefix + "/subnets/"
    env_before = agent.subnet_file.read_text()
    # The peer's lease is overwritten with garbage: its route stays (last good value).
    etcd.put(subnets + "10.5.200.0-24", b"\xff{not json")
    wait_for(lambda: "bad lease value" in agent.log(), what="the bad value logged")
    assert "keeping the last good value" in agent.log()
    # New keys that are not leases: not JSON, JSON of the wrong shape, a key that names no
    # subnet (the others are good vxlan leases but for that one thing). None of them becomes
    # a peer, none stops the agent.
    good_data = {"BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": "0a:00:00:00:02:09"}}
    etcd.put(subnets + "10.5.201.0-24", "not json")
    etcd.put(subnets + "10.5.202.0-24", "[1, 2, 3]")
    etcd.put(subnets + "10.5.203.0-24", json.dumps({"PublicIP": 42, **good_data}))
    etcd.put(subnets + "10.5.204.0-24", json.dumps({"PublicIP": "10.99.7.300", **good_data}))
    etcd.put(subnets + "not-a-subnet", json.dumps({"PublicIP": "10.99.7.2", **good_data}))
    # A good lease after them is still followed: the watch loop kept going.
    etcd.put(subnets + "10.5.205.0-24", vxlan_lease("10.99.7.5", "0a:00:00:00:02:05"))
    wait_for(lambda: "10.5.205.0/24" in routed_peers(agent.host), what="a later good lease")
    # The self-check (every second here) lists the garbage too, and only logs it.
    wait_for(lambda: agent.log().count("ignoring") >= 1, what="the self-check skipping garbage")
    # The kernel holds flannel's three entries for exactly the two good leases, nothing else.
    assert routed_peers(agent.host) == {PEER_SUBNET: PEER_IP, "10.5.205.0/24": "10.99.7.5"}
    assert alive_and_ready(agent)
    assert agent.metric("overlay_agent_peers") == 2
    assert agent.metric("overlay_agent_routes_programmed") == 2
    assert agent.subnet_file.read_text() == env_before
    assert "Traceback" not in agent.log()


def test_own_lease_overwritten_with_garbage_moves_to_a_clean_subnet(
    agent: AgentProc, etcd: EtcdClient, prefix: str
) -> None:
    device = vxlan_device(agent.host)
    assert device is not None
    key = own_key(etcd, prefix, agent.address)
    assert key is not None
    etcd.put(key, "}}} garbage")  # without an etcd lease: the subnet stays blocked
    wait_for(lambda: "overwritten with garbage" in agent.log(), what="the garbage noticed")
    new_key = wait_for(lambda: own_key(etcd, prefix, agent.address), what="a lease again")
    assert new_key != key
    third = new_key.rsplit("/", 1)[-1].split(".")[2]
    wait_for(
        lambda: f"FLANNEL_SUBNET=10.5.{third}.1/24" in agent.subnet_file.read_text(),
        what="subnet.env follows the new lease",
    )
    wait_for(lambda: alive_and_ready(agent), what="ready again")
    assert etcd.get(key).value == b"}}} garbage"  # not ours to delete
    assert "Traceback" not in agent.log()
    # The kernel follows too: the same flannel.1 (VtepMAC unchanged) now holds the new
    # subnet's .0 only, and the peer is still routed.
    moved = vxlan_device(agent.host)
    assert moved == {**device, "addresses": [f"10.5.{third}.0/32"]}
    # vxlan's new address goes on before the old one goes: a moment with no IPv4 address made
    # the kernel flush every peer's route and neighbour, and nothing programmed them again.
    peers = routed_peers(agent.host)
    assert peers == {PEER_SUBNET: PEER_IP}


@pytest.mark.parametrize(
    "config",
    [
        "not json at all",
        '{"Network": "10.5.0.0/33", "Backend": {"Type": "vxlan"}}',
        '{"Network": "banana"}',
        '{"Backend": {"Type": "vxlan"}}',
        "[]",
    ],
    ids=["not-json", "prefix-33", "not-a-cidr", "no-network", "a-list"],
)
def test_config_broken_after_ready_keeps_the_last_good_state(
    agent: AgentProc, node: AgentHost, etcd: EtcdClient, prefix: str, config: str
) -> None:
    env_before = agent.subnet_file.read_text()
    device = vxlan_device(agent.host)
    etcd.put(prefix + "/config", config)
    # The running agent keeps the config it started with and goes on following peers.
    etcd.put(prefix + "/subnets/10.5.206.0-24", vxlan_lease("10.99.7.6", "0a:00:00:00:02:06"))
    wanted = {PEER_SUBNET: PEER_IP, "10.5.206.0/24": "10.99.7.6"}
    wait_for(lambda: routed_peers(agent.host) == wanted, what="peers still followed")
    assert alive_and_ready(agent)
    assert agent.subnet_file.read_text() == env_before
    assert vxlan_device(agent.host) == device
    # Restarted now, it says what is wrong with the key, waits (healthy, not ready) instead of
    # exiting, and takes its previous subnet back once the config is repaired; its data plane
    # stays up all along.
    assert agent.terminate() < 5
    again = AgentProc(node, prefix, name="again")
    again.subnet_file.write_text(env_before)
    try:
        again.start()
        wait_for(lambda: f"invalid config in {prefix}/config" in again.log(), what="logged")
        assert again.proc is not None and again.proc.poll() is None
        assert http_get(again.port, "/readyz")[0] == 503
        assert http_get(again.port, "/healthz")[0] == 200
        assert vxlan_device(again.host) == device
        assert routed_peers(again.host) == wanted
        etcd.put(prefix + "/config", CONFIG)
        again.wait_ready()
        assert again.subnet_file.read_text() == env_before
        assert vxlan_device(again.host) == device
        assert "Traceback" not in again.log()
    finally:
        again.kill()
