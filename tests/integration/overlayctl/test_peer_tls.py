"""The peer-TLS rounds on REAL etcd 3.4 clusters of 2 and 3 members on loopback, started as the
runbook's (plain http, v2 on) with data, moved to https peers by the stepper (etcd/peer_tls.py)
through a local executor: member IDs, cluster ID, a v3 and a v2 key kept; `member list` ends on
https:<peer port>; a writer putting a key every 200 ms loses no more than one restart at a time
(3 members: nothing); a run cut after every step (and between a write and its restart) resumes
from what it finds. Each round's time is printed (run with -s to see it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.etcd import peer_tls_drive
from overlayctl.etcd.peer_tls import Ports, Stage
from tests.integration.conftest import ETCD_BIN, free_port
from tests.integration.overlayctl.peer_tls_local import (
    Interrupted,
    LocalCluster,
    LocalExecutor,
    Writer,
)

pytestmark = pytest.mark.skipif(not ETCD_BIN, reason="no etcd server binary")


@pytest.fixture
def runbook_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of request.param members in plain http with v2 on, healthy, with data."""
    cluster = LocalCluster(tmp_path, request.param)
    try:
        for m in cluster.members:
            cluster.start(m)
        cluster.wait_healthy()
        cluster.etcdctl("put", "/kept/v3", "before")
        cluster.etcdctl("set", "/atomic.io/network/config", '{"Network":"172.21.0.0/16"}',
                        api="2")  # fmt: skip
        yield cluster
    finally:
        cluster.stop_all()


def identity(cluster: LocalCluster) -> tuple[int, set[int]]:
    listed = cluster.member_list()
    return listed["header"]["cluster_id"], {m["ID"] for m in listed["members"]}


def assert_moved(cluster: LocalCluster, before: tuple[int, set[int]]) -> None:
    assert identity(cluster) == before
    urls = {m["name"]: m["peerURLs"] for m in cluster.member_list()["members"]}
    assert urls == {m.name: [f"https://{m.address}:{cluster.ports.peer}"]
                    for m in cluster.members}  # fmt: skip
    assert json.loads(cluster.etcdctl("get", "/kept/v3", "-w", "json"))["count"] == 1
    assert "172.21.0.0/16" in cluster.etcdctl("get", "/atomic.io/network/config", api="2")
    assert cluster.unhealthy() == []


def want(cluster: LocalCluster) -> Ports:
    """The peer port the members use, and a free high port to start the temporary one at."""
    return Ports(cluster.ports.peer, free_port())


@pytest.mark.parametrize("runbook_cluster", [2, 3], indirect=True, ids=["2-members", "3-members"])
def test_peers_move_to_tls_keeping_members_data_and_writes(runbook_cluster: LocalCluster) -> None:
    cluster, size = runbook_cluster, runbook_cluster.size
    before = identity(cluster)
    ex = LocalExecutor(cluster)
    with Writer([cluster.client_url(m) for m in cluster.members]) as writer:
        time.sleep(1)  # the writer's puts before the rounds, and after them: all succeed
        done = peer_tls_drive.drive(ex, want(cluster))
        time.sleep(1)
    rounds_in_order = ["R1"] * size + ["U1"] * size + ["R2"] * size + ["U2"] * size
    assert [s.round for s, _ in done.steps] == rounds_in_order
    assert_moved(cluster, before)
    rounds = {k: round(v, 2) for k, v in done.by_round().items()}
    print(f"\n{size} members: rounds {rounds}, restarts (stop to all healthy) "
          f"{[round(r, 2) for r in ex.restarts]}, writer: {len(writer.results)} puts, "
          f"{writer.failures} failed, longest outage {writer.longest_outage():.2f} s")  # fmt: skip
    assert len(writer.results) >= 10 and writer.results[-1][1] and writer.results[0][1]
    if size >= 3:
        assert writer.failures == 0, writer.results
    else:  # two members: each restart is a short loss of quorum, never more than one
        assert writer.longest_outage() <= max(ex.restarts) + 0.5
    # R3 as init's Etcd does it (here: peers only, clients stay http): the temporary listener
    # goes, member by member, and the cluster stays whole.
    for m in cluster.members:
        m.file = Stage.TLS
        cluster.stop(m)
        cluster.start(m)
        cluster.wait_healthy()
    assert_moved(cluster, before)
    assert peer_tls_drive.drive(LocalExecutor(cluster), want(cluster)).steps == []


@pytest.mark.parametrize("runbook_cluster", [2, 3], indirect=True, ids=["2-members", "3-members"])
def test_a_run_cut_after_every_step_resumes_from_what_it_finds(
    runbook_cluster: LocalCluster,
) -> None:
    """Each run takes one step and is cut; every other roll is cut between its write and its
    restart. A fresh run each time, knowing nothing but what it observes, converges."""
    cluster = runbook_cluster
    before, ports = identity(cluster), want(cluster)
    cuts, lines = 0, []
    for i in range(40):
        ex = LocalExecutor(cluster, budget=1, cut_before_restart=i % 2 == 0)
        try:
            done = peer_tls_drive.drive(ex, ports)
        except Interrupted:
            cuts += 1
            lines += ex.lines[:-1] if ex.budget == 0 else ex.lines  # the cut one was not taken
            assert cluster.unhealthy() == [] or any(m.running is None for m in cluster.members)
            continue
        lines += ex.lines
        assert done.steps == [] or len(done.steps) == 1
        if not done.steps:
            break
    else:
        raise AssertionError(f"no end after 40 runs: {lines}")
    assert_moved(cluster, before)
    assert cuts >= 4 * cluster.size, lines  # every step was cut after
    assert any("restart (peers" in line for line in lines), lines  # resumed a written file
    print(f"\n{cuts} cuts, steps: {lines}")
