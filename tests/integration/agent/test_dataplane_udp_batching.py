"""The udp backend's opt-in Batching mode on light lab hosts: TSO super-packets over UDP GSO.

Same topology as test_dataplane_backends.py (docker0 bridge, one container per host, the
backend run through tests/dataplane_driver.py with flannel's iptables rules).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane_driver import Cluster, Node
from tests.polling import wait_for

pytestmark = pytest.mark.lab

BATCHING = {"Type": "udp", "Batching": True}


def _tcp_transfer(cluster: Cluster, megabytes: int = 50) -> None:
    """iperf3 sends MEGABYTES over TCP from the first container to the second."""
    client, server = cluster.nodes[0], cluster.nodes[1]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", server.container_ns, "iperf3", "-s", "-1", "-p", "5299"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        argv = ["iperf3", "-c", server.container_ip, "-p", "5299", "-n", f"{megabytes}M"]
        done = subprocess.run(
            ["ip", "netns", "exec", client.container_ns, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def _counted(cluster: Cluster, node: object, key: str) -> dict | None:
    """NODE's data-plane counters once KEY shows the whole transfer (over 50 MB), else None.
    Each poll publishes NODE's peers as they are: an empty list would remove them, and a
    count still on its way at the first poll would then never arrive."""
    peers = [o.lease(cluster.backend) for o in cluster.nodes if o is not node]
    stats = cluster.publish(node, peers)["stats"]  # type: ignore[arg-type]
    return stats if stats[key] > 50e6 else None


def test_batching_carries_pings_and_tcp_super_packets(light_lab) -> None:
    with Cluster(light_lab, "udp") as cluster:
        cluster.config["Backend"] = dict(BATCHING)
        cluster.start_all()
        assert {n.ready["mtu"] for n in cluster.nodes} == {1472}  # containers see no change
        assert [a["errors"] for a in cluster.mesh()] == [[], [], []]
        assert cluster.ping_failures() == []
        _tcp_transfer(cluster)
        # The counters reach the driver a moment after iperf3 ends (seen at 49.8 of 52.4 MB
        # under load): poll them, bounded, rather than read them once.
        sender, receiver = (
            wait_for(lambda n=n, key=key: _counted(cluster, n, key), 10, f"{key} counted", 0.5)
            for n, key in zip(cluster.nodes[:2], ("tx_bytes", "rx_bytes"), strict=True)
        )
        # TSO: far fewer, far bigger packets than the 1472-byte MTU allows.
        assert sender["tx_bytes"] > 50e6 and sender["tx_bytes"] / sender["tx_packets"] > 8000
        assert receiver["rx_bytes"] > 50e6 and receiver["rx_packets"] < sender["tx_packets"] * 1.1
        assert sender["tx_drops_error"] + receiver["rx_drops_error"] < 20
        for node in cluster.nodes:
            cluster.stop(node)
            assert "flannel0" not in cluster.run(node, "ip", "-o", "link", "show")


def test_batching_and_plain_ends_do_not_agree(light_lab) -> None:
    """Batching is an agreement: a flannel-format peer cannot read its datagrams (and says
    so in its error counter), while the Batching end still reads flannel's."""
    with Cluster(light_lab, "udp", count=2) as cluster:
        plain, batching = cluster.nodes
        cluster.start(plain)
        cluster.config["Backend"] = dict(BATCHING)
        cluster.start(batching)
        cluster.mesh()
        assert cluster.ping_procs([(plain, batching.container_ip)], count=1) == [False]
        plain_stats = cluster.publish(plain, [batching.lease("udp")])["stats"]
        batching_stats = cluster.publish(batching, [plain.lease("udp")])["stats"]
        assert batching_stats["rx_packets"] >= 1  # the echo request arrived and was answered
        assert plain_stats["rx_drops_error"] >= 1 and plain_stats["rx_packets"] == 0


def test_restart_without_batching_turns_the_offloads_off(light_lab) -> None:
    """flannel0 is persistent: after a Batching run it must not keep handing out
    super-packets to the flannel-format forwarder that takes over."""
    with Cluster(light_lab, "udp", count=2) as cluster:
        cluster.config["Backend"] = dict(BATCHING)
        cluster.start_all(teardown=False)
        cluster.mesh()
        _tcp_transfer(cluster, megabytes=10)
        for node in cluster.nodes:
            cluster.stop(node)
        cluster.config["Backend"] = {"Type": "udp"}
        cluster.start_all()
        cluster.mesh()
        assert cluster.ping_failures() == []
        _tcp_transfer(cluster, megabytes=10)
        stats = cluster.publish(cluster.nodes[0], [cluster.nodes[1].lease("udp")])["stats"]
        assert stats["tx_bytes"] > 5e6, stats
        assert stats["tx_bytes"] / stats["tx_packets"] <= 1472
        assert "rx_reassembled" not in stats


def _workers(node: Node) -> list[int]:
    """PIDs (as seen from here) of NODE's receive workers: the driver's children running
    agent.backends.udp.worker."""
    assert node.proc is not None
    driver = int(Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text())
    found = []
    for task in Path(f"/proc/{driver}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"agent.backends.udp.worker" in cmdline:
                found.append(int(child))
    return found


@contextlib.contextmanager
def _batching_cluster(light_lab, count: int) -> Iterator[Cluster]:
    """COUNT hosts with the udp backend in Batching mode, started and meshed."""
    with Cluster(light_lab, "udp", count=count) as cluster:
        cluster.config["Backend"] = dict(BATCHING)
        cluster.start_all()
        cluster.mesh()
        yield cluster


def _stats(cluster: Cluster, node: Node) -> dict:
    peers = [o.lease("udp") for o in cluster.nodes if o is not node]
    return cluster.publish(node, peers)["stats"]


def test_receiving_goes_to_the_worker_under_load_and_comes_back(light_lab) -> None:
    with _batching_cluster(light_lab, 2) as cluster:
        receiver = cluster.nodes[1]
        assert len(_workers(receiver)) == 1
        before = _stats(cluster, receiver)
        assert (before["rx_worker_handovers"], before["rx_worker_active"]) == (0, 0)
        _tcp_transfer(cluster, megabytes=600)  # ~1 s or more: several measuring windows
        during = _stats(cluster, receiver)
        assert during["rx_worker_handovers"] >= 1, during
        assert during["rx_bytes"] > 600e6 and during["rx_drops_error"] < 20
        # Idle again: the worker hands the socket back, and a ping (answered in one thread)
        # still gets through.
        wait_for(lambda: _stats(cluster, receiver)["rx_worker_active"] == 0 or None, 10,
                 "the worker to hand receiving back")  # fmt: skip
        assert cluster.ping_failures() == []


def test_a_killed_worker_is_replaced_and_nothing_is_left_behind(light_lab) -> None:
    with _batching_cluster(light_lab, 2) as cluster:
        node = cluster.nodes[0]
        (first,) = _workers(node)
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: [p for p in _workers(node) if p != first] or None, 10,
                          "a new worker")  # fmt: skip
        assert _stats(cluster, node)["rx_worker_restarts"] == 1
        assert cluster.ping_failures() == []
        _tcp_transfer(cluster, megabytes=20)
        cluster.stop(node)  # tears the backend down: the worker exits (reaping: test_udp_worker)
        assert not Path(f"/proc/{second[0]}").exists()


def test_each_peer_gets_a_connected_socket_closed_with_its_lease(light_lab) -> None:
    with _batching_cluster(light_lab, 3) as cluster:
        node, peers = cluster.nodes[0], cluster.nodes[1:]

        def connected() -> list[str]:
            out = cluster.run(node, "ss", "-u", "-n", "-H", "state", "established")
            return sorted(line.split()[-1] for line in out.splitlines() if line.strip())

        both = sorted(f"{p.host.address}:8285" for p in peers)
        assert connected() == both
        cluster.publish(node, [peers[0].lease("udp")])
        # Retired, not closed yet: the forwarding thread may have just looked it up.
        assert connected() == both
        assert cluster.ping_procs([(node, peers[0].container_ip)], count=1) == [True]
        assert cluster.ping_procs([(node, peers[1].container_ip)], count=1) == [False]
        time.sleep(5)  # udp.RETIRE
        cluster.publish(node, [])  # the next change closes what was retired long enough ago
        assert connected() == [f"{peers[0].host.address}:8285"]
