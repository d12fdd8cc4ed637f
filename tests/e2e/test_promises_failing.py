"""README promises of `verify` and `status` when something is broken (issue #14), on the shared
cluster: exit 1, the exact cell of the table, and `ok: false` with an `errors` entry naming the
host in the JSON. Each test breaks one thing on one or two hosts and puts it back in a finally,
then waits for `status` to be healthy again (the rule of tests/e2e/conftest.py).
"""

from __future__ import annotations

import pytest

from overlayctl.lab import state
from tests.e2e.promises import IMAGE, RTT, leases, matrix, row, run, sh, table
from tests.labtools import cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ("node1", "node2", "node3")
DONE = "(each with a Don't-Fragment ping at the overlay MTU)"


def healthy_again(lab: state.LabState, three) -> None:
    wait_for(lambda: cli(lab, "status", "-i", str(three)).returncode == 0, 60, "status ok", 1)


def verify_both(lab: state.LabState, three) -> tuple[str, dict]:
    """verify's table (after asserting exit 1) and its JSON document (ok false, exit 1)."""
    text = cli(lab, "verify", "-i", str(three), *IMAGE)
    assert text.returncode == 1, text.stdout + text.stderr
    result, doc = run(lab, "verify", "-i", str(three), *IMAGE)
    assert result.returncode == 1 and doc["ok"] is False, result.stdout
    return text.stdout, doc


def assert_cells(cells: dict[tuple[str, str], str], bad: dict[tuple[str, str], str]) -> None:
    """BAD's cells hold exactly their text; every other one is a round-trip time."""
    assert {pair: cells[pair] for pair in bad} == bad, cells
    assert all(RTT.match(c) for pair, c in cells.items() if pair not in bad), cells
    assert set(cells) == {(a, b) for a in THREE for b in THREE}


def test_verify_fails_the_pairs_of_a_host_whose_overlay_traffic_is_dropped(shared_cluster):
    lab, three, _ = shared_cluster
    drop = "FORWARD -i flannel.1 -j DROP"  # what arrives over the overlay, before docker0
    sh(lab, "node3", f"iptables -I {drop}")
    try:
        text, doc = verify_both(lab, three)
    finally:
        sh(lab, "node3", f"iptables -D {drop}")
    failed = [("node1", "node3"), ("node2", "node3"), ("node3", "node1"), ("node3", "node2")]
    assert_cells(matrix(text), dict.fromkeys(failed, "FAIL"))
    assert f"verify: 5/9 pairs ok {DONE} -- FAILED" in text
    assert sorted((p["from"], p["to"]) for p in doc["pairs"] if not p["ok"]) == failed
    assert sorted((e["host"], e["phase"], e["message"].split(":")[0]) for e in doc["errors"]) == [
        ("node1", "ping", "to node3"),
        ("node2", "ping", "to node3"),
        ("node3", "ping", "to node1"),
        ("node3", "ping", "to node2"),
    ]
    assert all("100% packet loss" in e["message"] for e in doc["errors"]), doc["errors"]
    healthy_again(lab, three)


def test_verify_says_df_fail_when_one_path_has_a_smaller_mtu(shared_cluster):
    """node3's VXLAN device below the overlay MTU: plain pings still pass (fragments), the
    Don't-Fragment ping at the MTU from node3's container does not."""
    lab, three, _ = shared_cluster
    mtu = sh(lab, "node3", "cat /sys/class/net/flannel.1/mtu").strip()
    assert mtu == "1450"
    sh(lab, "node3", "ip link set flannel.1 mtu 1400")
    try:
        text, doc = verify_both(lab, three)
    finally:
        sh(lab, "node3", f"ip link set flannel.1 mtu {mtu}")
    cells = matrix(text)
    df = [("node3", "node1"), ("node3", "node2")]
    assert all(cells[p].endswith(" ms, DF FAIL") and RTT.match(cells[p][:-9]) for p in df), cells
    assert_cells(cells, {p: cells[p] for p in df})
    assert f"verify: 7/9 pairs ok {DONE} -- FAILED" in text
    bad = [p for p in doc["pairs"] if not (p["ok"] and p["mtu_ok"])]
    assert [(p["from"], p["to"], p["ok"], p["mtu_ok"]) for p in bad] == [
        ("node3", "node1", True, False),
        ("node3", "node2", True, False),
    ]
    assert doc["errors"] == [
        {"host": "node3", "phase": "ping", "message": "to node1: DF ping at the MTU failed"},
        {"host": "node3", "phase": "ping", "message": "to node2: DF ping at the MTU failed"},
    ]
    healthy_again(lab, three)


def test_verify_fails_both_hosts_whose_containers_share_an_address(shared_cluster):
    """docker on its default 172.17.0.1/16 on node2 and node3 (not on the overlay): both test
    containers get 172.17.0.2, and verify names both hosts instead of pinging anything."""
    lab, three, _ = shared_cluster
    off = (
        "cp -p /run/flannel/docker /run/flannel/docker.promises && "
        "sed -i 's|--bip=[0-9./]*|--bip=172.17.0.1/16|' /run/flannel/docker && "
        "systemctl restart docker"
    )
    back = "mv /run/flannel/docker.promises /run/flannel/docker && systemctl restart docker"
    try:
        for host in ("node2", "node3"):
            sh(lab, host, off)
        text, doc = verify_both(lab, three)
    finally:
        for host in ("node2", "node3"):
            on(lab, host, f"test -e /run/flannel/docker.promises && {back}")
    why = "docker is not using this host's overlay subnet (--bip)"
    assert f"node2: FAILED container address 172.17.0.2 is also used on node3: {why}" in text
    assert f"node3: FAILED container address 172.17.0.2 is also used on node2: {why}" in text
    assert set(matrix(text).values()) == {"-"}  # no pair was pinged
    assert f"verify: 0/9 pairs ok, 9 not tested {DONE} -- FAILED" in text
    assert doc["pairs"] == [] and doc["pairs_untested"] == 9
    assert sorted(doc["hosts_failed"]) == ["node2", "node3"]
    assert doc["errors"] == [
        {"host": "node2", "phase": None,
         "message": f"container address 172.17.0.2 is also used on node3: {why}"},
        {"host": "node3", "phase": None,
         "message": f"container address 172.17.0.2 is also used on node2: {why}"},
    ]  # fmt: skip
    healthy_again(lab, three)  # status checks docker0 against each lease again


def test_status_names_a_stopped_agent_in_its_table_and_json(shared_cluster):
    lab, three, _ = shared_cluster
    sh(lab, "node2", "systemctl stop overlay-agent")
    try:
        text = cli(lab, "status", "-i", str(three))
        result, doc = run(lab, "status", "-i", str(three))
    finally:
        sh(lab, "node2", "systemctl start overlay-agent")
    assert text.returncode == 1 and result.returncode == 1
    cells = row(table(text.stdout, "host"), "host", "node2")
    assert (cells["agent"], cells["ready"], cells["docker"], cells["bip ok"]) == (
        "NO", "NO", "yes", "yes")  # fmt: skip
    assert all(row(table(text.stdout, "host"), "host", h)["agent"] == "yes" for h in ("node1",
               "node3"))  # fmt: skip
    assert doc["ok"] is False and doc["healthy"] is False and doc["etcd"]["healthy"] is True
    assert doc["errors"] == [
        {"host": "node2", "phase": "host", "message": "overlay-agent is not running"}
    ]
    healthy_again(lab, three)


def test_a_missing_peer_route_fails_status_and_the_pairs_it_carries(shared_cluster):
    """The agent programs a peer's route on lease events only (agent/watch.py), so a route
    deleted by hand stays missing until put back."""
    lab, three, _ = shared_cluster
    node1 = leases(run(lab, "status", "-i", str(three))[1])["node1"]
    route = sh(lab, "node3", f"ip -4 route show {node1}").strip()
    assert route == f"{node1} via {node1.split('/')[0]} dev flannel.1 onlink"
    sh(lab, "node3", f"ip route del {node1}")
    try:
        text = cli(lab, "status", "-i", str(three))
        result, doc = run(lab, "status", "-i", str(three))
        verify_text, verify_doc = verify_both(lab, three)
    finally:
        on(lab, "node3", f"ip route replace {route}")
    assert text.returncode == 1 and result.returncode == 1 and doc["ok"] is False
    hosts = table(text.stdout, "host")
    assert row(hosts, "host", "node3")["missing routes"] == node1
    assert [row(hosts, "host", h)["missing routes"] for h in ("node1", "node2")] == ["", ""]
    assert [h["missing_routes"] for h in doc["hosts"]] == [[], [], [node1]]
    assert doc["errors"] == [
        {"host": "node3", "phase": "host", "message": f"missing routes to {node1}"}
    ]
    failed = [("node1", "node3"), ("node3", "node1")]  # the request's way, the reply's way
    assert_cells(matrix(verify_text), dict.fromkeys(failed, "FAIL"))
    assert sorted((e["host"], e["message"].split(":")[0]) for e in verify_doc["errors"]) == [
        ("node1", "to node3"),
        ("node3", "to node1"),
    ]
    healthy_again(lab, three)
