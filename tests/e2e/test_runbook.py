"""The whole runbook on full lab hosts: init -> verify (N x N, DF at the MTU) -> status, then an
agent restart, a reboot, a join and a reset, for vxlan; and the seed's udp backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from overlayctl.lab import labs, state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.e2e.conftest import Cluster, init_or_fail, make_lab
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
IMAGE = ("--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE)
THREE = ["node1", "node2", "node3"]  # the hosts of the `three` inventory, in order
EVERY = [*THREE, "node4"]


def verify(lab: state.LabState, inventory: Path) -> dict:
    result = cli(lab, "verify", "-i", str(inventory), "-o", "json", *IMAGE)
    return json.loads(result.stdout)


def status(lab: state.LabState, inventory: Path) -> dict:
    return json.loads(cli(lab, "status", "-i", str(inventory), "-o", "json").stdout)


def leases(doc: dict) -> dict[str, str]:
    """Host -> subnet: for looking a host's subnet up. It keeps ONE lease per host, so it hides
    a duplicate: to compare leases before and after something, use lease_pairs."""
    return {lease["host"]: lease["subnet"] for lease in doc["leases"]}


def lease_pairs(doc: dict) -> list[tuple[str, str]]:
    """Every lease as (host, subnet), sorted; a stale lease's host is `stale:<PublicIP>`. A
    second lease of a host stays a second pair, so comparing lists (and their lengths) sees it."""
    return sorted(
        (lease["host"] or f"stale:{lease['public_ip']}", lease["subnet"]) for lease in doc["leases"]
    )


def same_leases(after: list[tuple[str, str]], before: list[tuple[str, str]]) -> None:
    assert len(after) == len(before), (after, before)
    assert after == before


@contextmanager
def initialised(hosts: int, backend: str) -> Iterator[tuple[state.LabState, Path, Path]]:
    """make_lab, then `init` on its first 3 hosts; the lab is removed afterwards."""
    lab, three, every = make_lab(hosts, backend)
    try:
        init_or_fail(lab, three)
        yield lab, three, every
    finally:
        labs.down(lab.name, progress=lambda _m: None)


@pytest.fixture
def vxlan(shared_cluster: Cluster) -> Cluster:
    return shared_cluster


def test_init_then_verify_every_pair_and_a_healthy_status(vxlan) -> None:
    lab, three, _ = vxlan
    report = verify(lab, three)
    assert report["ok"], report
    assert len(report["pairs"]) == 9
    assert all(p["ok"] and p["mtu_ok"] for p in report["pairs"])
    doc = status(lab, three)
    assert doc["healthy"] and doc["etcd"]["healthy"]
    assert [host for host, _ in lease_pairs(doc)] == THREE
    assert all(h["agent_ready"] and h["bip_ok"] and h["mtu"] == 1450 for h in doc["hosts"])
    assert doc["ok"] is True and doc["errors"] == [] and report["errors"] == []
    assert "init: 0 changes on 3 hosts" in cli(lab, "init", "-i", str(three)).stdout
    again = cli(lab, "init", "-i", str(three), "-o", "json")
    rerun = json.loads(again.stdout)  # exactly one document; progress went to stderr
    assert again.returncode == 0 and rerun["ok"] is True and rerun["errors"] == []
    assert rerun["changes"] == 0 and set(rerun["hosts"]) == {"node1", "node2", "node3"}


def test_verify_sample_rotates_until_every_pair_is_tested(vxlan) -> None:
    """`verify --sample 1` on 3 hosts: each run tests each host's docker0 and one peer (6 of the
    9 pairs), the other 3 listed as untested, never as passed; two consecutive runs (the round
    counted in the state folder) test all 9."""
    lab, three, _ = vxlan
    tested: set[tuple[str, str]] = set()
    rounds = []
    for _ in range(2):
        result = cli(lab, "verify", "-i", str(three), "-o", "json", "--sample", "1", *IMAGE)
        doc = json.loads(result.stdout)
        assert result.returncode == 0 and doc["ok"] is True, doc
        assert doc["sampled"] == 1 and doc["pairs_expected"] == 6 and len(doc["pairs"]) == 6
        pairs = {(p["from"], p["to"]) for p in doc["pairs"]}
        assert all(p["ok"] and p["mtu_ok"] for p in doc["pairs"])
        assert {(u["from"], u["to"]) for u in doc["untested"]} == {
            (a, b) for a in THREE for b in THREE
        } - pairs
        tested |= pairs
        rounds.append(doc["sample_round"])
    assert rounds[1] == rounds[0] + 1
    assert tested == {(a, b) for a in THREE for b in THREE}
    table = cli(lab, "verify", "-i", str(three), "--sample", "1", *IMAGE).stdout
    assert "6/6 sampled pairs ok" in table and "3 other pairs not tested in this run" in table


def test_status_json_names_a_stopped_agent(vxlan) -> None:
    lab, three, _ = vxlan
    assert on(lab, "node3", "systemctl stop overlay-agent").returncode == 0
    try:
        result = cli(lab, "status", "-i", str(three), "-o", "json")
        doc = json.loads(result.stdout)
        assert result.returncode == 1 and doc["ok"] is False and doc["healthy"] is False
        assert doc["errors"] == [
            {"host": "node3", "phase": "host", "message": "overlay-agent is not running"}
        ]
    finally:
        assert on(lab, "node3", "systemctl start overlay-agent").returncode == 0
    assert status(lab, three)["ok"] is True


def test_agent_restart_keeps_lease_and_docker(vxlan) -> None:
    lab, three, _ = vxlan
    before = lease_pairs(status(lab, three))
    assert [host for host, _ in before] == THREE
    docker_pid = on(lab, "node2", "systemctl show -p MainPID --value docker").stdout
    assert on(lab, "node2", "systemctl restart overlay-agent").returncode == 0
    same_leases(lease_pairs(status(lab, three)), before)
    assert on(lab, "node2", "systemctl show -p MainPID --value docker").stdout == docker_pid
    assert verify(lab, three)["ok"]


def test_reboot_brings_agent_and_docker_back_on_the_same_bip(vxlan) -> None:
    lab, three, _ = vxlan
    before = lease_pairs(status(lab, three))
    assert [host for host, _ in before] == THREE
    labs.restart_host(lab.name, "node2", progress=lambda _m: None)
    doc = status(lab, three)
    same_leases(lease_pairs(doc), before)
    node2 = next(h for h in doc["hosts"] if h["name"] == "node2")
    assert node2["agent_ready"] and node2["bip_ok"]
    assert node2["docker0"].startswith(dict(before)["node2"].split("/")[0].rsplit(".", 1)[0])
    assert verify(lab, three)["ok"]


def test_join_a_fourth_host_then_reset_it(vxlan) -> None:
    lab, three, every = vxlan
    joined = cli(lab, "join", "-i", str(every), "node4")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    report = verify(lab, every)
    assert report["ok"] and len(report["pairs"]) == 16, report
    assert [host for host, _ in lease_pairs(status(lab, every))] == EVERY

    gone = cli(lab, "reset", "-i", str(every), "node4")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    # By PublicIP: with `three` (no node4) a lease left behind would show as stale, not "node4".
    left = status(lab, three)["leases"]
    assert [lease for lease in left if lease["public_ip"] == lab.host("node4").address] == []
    assert [host for host, _ in lease_pairs({"leases": left})] == THREE
    assert on(lab, "node4", "ip link show flannel.1").returncode != 0
    assert on(lab, "node4", "test -e /etc/systemd/system/overlay-agent.service").returncode == 1
    assert verify(lab, three)["ok"]
    # As docs/runbooks/remove-host.md ends: init with the inventory without node4, so node1-3's
    # /etc/hosts forget it and the shared cluster is left as it was (0 changes for the next run).
    init_or_fail(lab, three)


def test_udp_like_the_seed() -> None:
    with initialised(3, "udp") as (lab, three, _):
        env = on(lab, "node1", "cat /run/flannel/subnet.env").stdout
        assert "FLANNEL_MTU=1472\n" in env
        opts = on(lab, "node1", "cat /run/flannel/docker").stdout
        assert "--mtu=1472" in opts and "--ip-masq=true" in opts
        report = verify(lab, three)
        assert report["ok"] and len(report["pairs"]) == 9, report
        assert on(lab, "node1", "ip -o link show flannel0").returncode == 0
