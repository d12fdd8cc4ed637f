"""README promises of `reset` (issue #14), on a lab of its own, in order: one etcd member of
three reset (member removed, data gone, its reservation kept, the other two healthy); a reset
below quorum refused, and forced; then the whole cluster reset and, on every host, nothing of
the overlay left and every file under /etc and /opt as it was before the first `init`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from tests.e2e.promises import inventory, leases, ok, own_lab, run, sh, snapshot
from tests.labtools import ETCDCTL, cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
NETWORK = ipaddress.ip_network("172.21.0.0/16")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple]:
    """The lab, inventories of node1-3 and of node1-2, and each host's files before init."""
    with own_lab(3, "pr") as lab:
        before = {h: snapshot(lab, h) for h in THREE}
        three = inventory(lab, "three", THREE)
        two = inventory(lab, "two", THREE[:2])
        ok(cli(lab, "init", "-i", str(three)))
        yield lab, three, two, before


def members(lab, host: str = "node1") -> list[str]:
    out = sh(lab, host, f"{ETCDCTL} member list -w json")
    return sorted(m["name"] for m in json.loads(out)["members"])


def test_reset_of_one_member_removes_it_and_keeps_its_reservation(cluster) -> None:
    lab, three, two, _ = cluster
    subnet = leases(run(lab, "status", "-i", str(three))[1])["node3"]
    key = f"/coreos.com/network/subnets/{subnet.replace('/', '-')}"
    # node3's lease made a reservation: the same key and value, without a TTL.
    sh(lab, "node1", f'{ETCDCTL} put {key} "$({ETCDCTL} get {key} --print-value-only)"')
    assert "lease" not in json.loads(sh(lab, "node1", f"{ETCDCTL} get {key} -w json"))["kvs"][0]

    result, doc = run(lab, "reset", "-i", str(three), "node3")
    assert result.returncode == 0 and doc["ok"] is True, result.stdout + result.stderr
    # no "lease ... deleted": a reservation stays
    assert doc["hosts"] == {"node3": [
        "agent stopped, data plane removed", "etcd member removed", "etcd user deleted",
        "files restored", "docker restarted on its own bridge", "etcd stopped, data removed",
    ], "cluster": ["replaced: /coreos.com/network/allowed-public-ips"]}  # fmt: skip
    assert members(lab) == ["node1", "node2"]
    assert sh(lab, "node3", "systemctl is-active etcd; test -e /var/lib/etcd/node3.etcd; echo $?"
              ) == "inactive\n1\n"  # fmt: skip

    result, status = run(lab, "status", "-i", str(two))
    assert result.returncode == 0 and status["ok"] is True and status["healthy"] is True, status
    assert sorted((m["name"], m["healthy"]) for m in status["etcd"]["members"]) == [
        ("node1", True),
        ("node2", True),
    ]
    (kept,) = [le for le in status["leases"] if le["subnet"] == subnet]
    assert kept["reservation"] is True and kept["expires_in_s"] is None
    assert kept["public_ip"] == lab.host("node3").address
    assert sh(lab, "node1", f"{ETCDCTL} get {key} --keys-only").strip() == key


BELOW = (
    "reset: removing node1 leaves 0 healthy of 1 etcd members, below quorum; re-run with "
    "--force to do it anyway"
)


def test_reset_below_quorum_is_refused_and_changes_nothing(cluster) -> None:
    lab, _, two, _ = cluster
    sh(lab, "node2", "systemctl stop etcd")
    try:
        text = cli(lab, "reset", "-i", str(two), "node1")
        result, doc = run(lab, "reset", "-i", str(two), "node1")
        state = sh(lab, "node1", "systemctl is-active etcd overlay-agent; ls /etc/overlayctl/pki")
    finally:
        sh(lab, "node2", "systemctl start etcd")
    assert text.returncode == 1 and f"overlayctl: error: {BELOW}" in text.stderr
    assert result.returncode == 1 and doc["ok"] is False and doc["hosts"] == {}
    assert doc["errors"] == [{"host": None, "phase": "reset", "message": BELOW}]
    assert state.startswith("active\nactive\nca.crt\n"), state
    assert members(lab) == ["node1", "node2"]
    assert run(lab, "status", "-i", str(two))[1]["ok"] is True


def test_reset_below_quorum_goes_with_force(cluster) -> None:
    lab, _, two, _ = cluster
    sh(lab, "node2", "systemctl stop etcd")
    try:
        result, doc = run(lab, "reset", "-i", str(two), "node1", "--force")
    finally:
        # node2 alone still lists node1 (no quorum to remove it): its etcd cannot become ready,
        # so do not wait for it. The whole-cluster reset below takes it away.
        sh(lab, "node2", "systemctl start --no-block etcd")
    assert result.returncode == 0 and doc["ok"] is True, result.stdout + result.stderr
    assert "files restored" in doc["hosts"]["node1"]
    # etcd cannot remove a member without quorum: said, and the rest of the reset went on.
    assert any(step.startswith("etcd member NOT removed") for step in doc["hosts"]["node1"])
    assert any(step.startswith("etcd user NOT deleted") for step in doc["hosts"]["node1"])
    assert "etcd stopped, data removed" in doc["hosts"]["node1"]
    assert sh(lab, "node1", "systemctl is-active etcd; test -e /var/lib/etcd/node1.etcd; echo $?"
              ) == "inactive\n1\n"  # fmt: skip


def test_whole_cluster_reset_leaves_nothing_of_the_overlay(cluster) -> None:
    lab, three, _, before = cluster
    result, doc = run(lab, "reset", "-i", str(three), "--yes")
    assert result.returncode == 0 and doc["ok"] is True, result.stdout + result.stderr
    assert sorted(doc["hosts"]) == ["cluster", *THREE]
    for host in THREE:
        assert "flannel" not in sh(lab, host, "ip -o link show")
        routes = sh(lab, host, "ip -4 route show").splitlines()
        into = [r for r in routes if ipaddress.ip_network(r.split()[0]).overlaps(NETWORK)]
        assert into == [], (host, routes)
        rules = sh(lab, host, "iptables -S; iptables -t nat -S")
        assert "FLANNEL" not in rules, (host, rules)
        bridge = sh(lab, host, "systemctl is-active docker; ip -4 -o addr show docker0").split()
        assert bridge[0] == "active" and not ipaddress.ip_interface(bridge[4]).network.overlaps(
            NETWORK
        ), (host, bridge)
        assert sh(lab, host, "systemctl is-active etcd overlay-agent || true").split() == [
            "inactive",
            "inactive",
        ]
        assert snapshot(lab, host) == before[host], host  # /etc/hosts included
    assert on(lab, "node1", f"{ETCDCTL} get /coreos.com/network/config").returncode != 0
