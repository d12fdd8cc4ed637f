"""The host firewall on full lab hosts (issue #17: etcd is no business of containers), with the
default inventory (cluster.host_firewall defaults to true), plus the host lock no local user
can plant (item 8) and a hostile lease shown as characters by `status` (item 11).

A container on node1 reaches neither node1's etcd (through docker0) nor node2's (through
docker's masquerade, the FORWARD rule), while node2 itself and an operator on 127.0.0.1 do;
`plan` shows the rules before `init`, a re-run changes nothing, `reset` takes chains, unit and
files away. Reachability is a TCP connect with a 2 s bound: a dropped SYN times out, an open
port answers at once (TLS is not needed to tell them apart).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from overlayctl import paths as hp
from overlayctl.lab import state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.e2e.promises import inventory, ok, own_lab, run, sh
from tests.labtools import ETCDCTL, cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
INPUT, FORWARD = hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN
FIREWALL_FILES = {hp.FIREWALL_RULES, hp.FIREWALL_UNIT}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, str, dict]]:
    """A 3-host lab initialised with its default inventory; also `plan`'s document before."""
    with own_lab(3, "fw") as lab:
        three = str(inventory(lab, "three", THREE))
        _, plan = run(lab, "plan", "-i", three)
        ok(cli(lab, "init", "-i", three))
        for host in ("node1", "node2"):  # a container image on the hosts that run one
            sh(lab, host, f"docker import {BUSYBOX_IMAGE} {BUSYBOX_IMAGE_TAG} >/dev/null")
        yield lab, three, plan


def address(lab: state.LabState, host: str) -> str:
    return str(lab.host(host).address)


def tcp_from_container(lab: state.LabState, host: str, ip: str, port: int) -> bool:
    """Whether a container on HOST completes a TCP handshake with IP:PORT within 2 s."""
    result = on(lab, host, f"docker run --rm --pull=never {BUSYBOX_IMAGE_TAG} "
                           f"nc -w 2 {ip} {port} </dev/null")  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr  # docker itself worked
    return result.returncode == 0


def tcp_from_host(lab: state.LabState, host: str, ip: str, port: int) -> bool:
    """Whether HOST itself (its own address as the source) connects to IP:PORT within 2 s."""
    result = on(lab, host, f"timeout 2 bash -c '</dev/tcp/{ip}/{port}'")
    return result.returncode == 0


def test_plan_shows_the_rules_before_init(cluster) -> None:
    _lab, _three, plan = cluster
    for host in THREE:
        files = {f["path"] for f in plan["hosts"][host]["files"] if f["phase"] == "firewall"}
        assert files == FIREWALL_FILES, plan["hosts"][host]["files"]
        actions = [(a["kind"], a["target"]) for a in plan["hosts"][host]["actions"]
                   if a["phase"] == "firewall"]  # fmt: skip
        assert ("start", hp.FIREWALL_UNIT_NAME) in actions
        rules = next(f["diff"] for f in plan["hosts"][host]["files"]
                     if f["path"] == hp.FIREWALL_RULES)  # fmt: skip
        assert f"+-A {INPUT} -p tcp --dport 2379 -j DROP" in rules


@pytest.mark.parametrize(
    ("target", "port"),
    [("node1", 2379), ("node2", 2379), ("node2", 2380)],
    ids=["own-host-through-docker0", "other-host-masqueraded", "other-host-peer-port"],
)
def test_a_container_on_node1_reaches_no_members_etcd(cluster, target: str, port: int) -> None:
    lab, _three, _plan = cluster
    assert not tcp_from_container(lab, "node1", address(lab, target), port)


def test_another_cluster_host_reaches_etcd(cluster) -> None:
    lab, _three, _plan = cluster
    node1 = address(lab, "node1")
    assert tcp_from_host(lab, "node2", node1, 2379)  # node2's agent dials from node2's address
    assert tcp_from_host(lab, "node2", node1, 2380)  # and node2's etcd peers with node1's
    ready = on(lab, "node2", "systemctl is-active overlay-agent && systemctl is-active etcd")
    assert ready.stdout.split() == ["active", "active"], ready


def test_the_operator_on_loopback_reaches_etcd(cluster) -> None:
    lab, _three, _plan = cluster
    assert tcp_from_host(lab, "node1", "127.0.0.1", 2379)
    health = on(lab, "node1", f"{ETCDCTL} --dial-timeout=3s endpoint health")
    assert health.returncode == 0 and "is healthy" in health.stdout + health.stderr, health


def test_the_rules_persist_in_a_unit_ordered_before_etcd(cluster) -> None:
    lab, _three, _plan = cluster
    for host in THREE:
        name = hp.FIREWALL_UNIT_NAME
        unit = sh(lab, host, f"systemctl is-enabled {name}; systemctl is-active {name}; "
                             f"systemctl show -p Before --value {name}")  # fmt: skip
        enabled, active, before = unit.splitlines()
        assert (enabled, active) == ("enabled", "active") and "etcd.service" in before.split()
        jumps = sh(lab, host, "iptables -S INPUT; iptables -t mangle -S FORWARD")
        assert jumps.count(f"-j {INPUT}") == 1 and jumps.count(f"-j {FORWARD}") == 1, jumps


def test_a_hostile_lease_reaches_the_terminal_as_characters(cluster) -> None:
    """A lease whose BackendType holds ESC sequences (clear screen, retitle the window)."""
    lab, three, _plan = cluster
    key = "/coreos.com/network/subnets/172.21.250.0-24"
    value = (f'{{"PublicIP":"{address(lab, "node3")}",'
             r'"BackendType":"\u001b[2J\u001b]0;owned\u0007vx\u009b31mlan"}')  # fmt: skip
    ok(on(lab, "node1", f"{ETCDCTL} put {key} '{value}' >/dev/null"))
    try:
        shown = cli(lab, "status", "-i", three)
        doc = run(lab, "status", "-i", three)[1]
    finally:
        ok(on(lab, "node1", f"{ETCDCTL} del {key}"))
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\x9b" not in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if line.startswith("172.21.250.0/24"))
    assert " vx31mlan " in row, row
    hostile = next(lease for lease in doc["leases"] if lease["subnet"] == "172.21.250.0/24")
    assert hostile["backend"] == "\x1b[2J\x1b]0;owned\x07vx\x9b31mlan"  # JSON: exact


def test_a_lock_planted_by_another_user_cannot_block_init(cluster) -> None:
    """Where the lock used to live (world-writable /run/lock), any user can make one; the
    folder it lives in now is root's alone."""
    lab, three, _plan = cluster
    holder = '{"command": "overlayctl init", "user": "mallory", "workstation": "x", "pid": 1}'
    old = "/run/lock/overlayctl.lock"
    plant = f"mkdir {old} && printf '%s\\n' {shlex.quote(holder)} > {old}/holder"
    planted = on(lab, "node1", f"runuser -u nobody -- sh -c {shlex.quote(plant)} && "
                               f"stat -c %U {old}/holder")  # fmt: skip
    assert planted.returncode == 0 and planted.stdout == "nobody\n", planted
    try:
        result, doc = run(lab, "init", "-i", three)
        assert result.returncode == 0 and doc["changes"] == 0, result.stdout + result.stderr
        assert sh(lab, "node1", "stat -c '%U %a' /run/overlayctl") == "root 700\n"
        refused = on(lab, "node1", "runuser -u nobody -- mkdir /run/overlayctl/lock")
        assert "Permission denied" in refused.stderr, refused
    finally:
        on(lab, "node1", "rm -rf /run/lock/overlayctl.lock")


def test_a_rerun_changes_nothing(cluster) -> None:
    lab, three, _plan = cluster
    result, doc = run(lab, "init", "-i", three)
    assert result.returncode == 0 and doc["changes"] == 0, result.stdout + result.stderr


def test_reset_takes_it_all_away(cluster) -> None:
    """Last: the lab is reset."""
    lab, three, _plan = cluster
    result, doc = run(lab, "reset", "-i", three, "--yes")
    assert result.returncode == 0 and doc["ok"] is True, result.stdout + result.stderr
    for host in THREE:
        gone = on(lab, host, f"iptables -S {INPUT}; iptables -t mangle -S {FORWARD}; "
                             f"systemctl cat {hp.FIREWALL_UNIT_NAME}; "
                             f"ls {hp.FIREWALL_RULES} {hp.FIREWALL_UNIT}")  # fmt: skip
        assert gone.stdout == "", gone.stdout
        jumps = sh(lab, host, "iptables -S INPUT; iptables -t mangle -S FORWARD")
        assert INPUT not in jumps and FORWARD not in jumps, jumps
