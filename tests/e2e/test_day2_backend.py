"""Changing the backend of a running cluster converges (issue #16 item 2): vxlan -> host-gw ->
udp -> vxlan, each through `plan` (which shows it), `init` (refused, saying what would happen)
and `init --force` (which does it), then `verify`, `status` and a `plan` with 0 changes.

A container runs on every host throughout: when docker must restart for a new MTU, the hosts
take turns (journald's stop/start times of docker never overlap between two hosts).
Destructive, so it has its own lab.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from overlayctl.lab import labs, state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.e2e.conftest import init_or_fail, make_lab
from tests.e2e.faults import assert_no_false_alarm
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
HOSTS = ("node1", "node2", "node3")
IMAGE = ("--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE)
MTU = {"vxlan": 1450, "host-gw": 1500, "udp": 1472}
DEVICE = {"vxlan": "flannel.1", "host-gw": None, "udp": "flannel0"}
# Stops on SIGTERM within a second (a bare `sleep` as PID 1 ignores it, so every docker restart
# would wait out docker's 10 s stop timeout).
WORKLOAD = shlex.quote("trap 'exit 0' TERM; while true; do sleep 1; done")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path]]:
    lab, three, _ = make_lab(3, "vxlan", prefix="bk")
    try:
        init_or_fail(lab, three)
        for host in HOSTS:  # a workload that docker's restarts interrupt
            run = (f"docker image inspect {BUSYBOX_IMAGE_TAG} >/dev/null 2>&1 || docker import "
                   f"{BUSYBOX_IMAGE} {BUSYBOX_IMAGE_TAG} >/dev/null; docker run -d --restart=always"
                   f" --name workload {BUSYBOX_IMAGE_TAG} sh -c {WORKLOAD}")  # fmt: skip
            assert on(lab, host, run).returncode == 0
        yield lab, three
    finally:
        labs.down(lab.name, progress=lambda _m: None)


def with_backend(three: Path, backend: str) -> Path:
    doc = yaml.safe_load(three.read_text())
    doc["cluster"]["backend"] = backend
    path = three.with_name(f"{backend}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def docker_windows(
    lab: state.LabState, since: str, unit: str = "docker", hosts: tuple[str, ...] = HOSTS
) -> dict[str, tuple[float, float]]:
    """HOST -> (first stop, last start) of UNIT since SINCE (epoch seconds, from journald), for
    each of HOSTS where UNIT was stopped."""
    found = {}
    for host in hosts:
        out = on(lab, host, f"journalctl -u {unit} -o short-unix --no-pager --since @{since}")
        stamps = [(float(line.split()[0]), line) for line in out.stdout.splitlines()
                  if re.match(r"^\d+\.\d+ ", line)]  # fmt: skip
        stops = [t for t, line in stamps if "Stopping" in line]
        starts = [t for t, line in stamps if "Started" in line]
        if stops:
            found[host] = (min(stops), max(starts))
    return found


@pytest.mark.parametrize("backend", ["host-gw", "udp", "vxlan"])
def test_the_backend_changes_on_a_live_cluster(cluster, backend: str) -> None:
    lab, three = cluster
    inventory = with_backend(three, backend)
    plan = cli(lab, "plan", "-i", str(inventory), "-o", "json")
    doc = json.loads(plan.stdout)
    assert doc["network_config"]["desired"]["Backend"] == {"Type": backend}, plan.stderr
    for host in HOSTS:
        actions = [f"{a['kind']} {a['target']}" for a in doc["hosts"][host]["actions"]]
        assert "restart overlay-agent" in actions, (host, actions)
    refused = cli(lab, "init", "-i", str(inventory))
    assert refused.returncode == 4 and "Re-run with --force" in refused.stderr, refused.stderr
    assert "restarts the agent on every node host" in refused.stderr

    since = on(lab, "node1", "date +%s").stdout.strip()
    forced = cli(lab, "init", "-i", str(inventory), "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "replaced: /coreos.com/network/config" in forced.stdout

    # Every host runs the new data plane only, and docker its MTU.
    for host in HOSTS:
        links = on(lab, host, "ip -o link show").stdout
        for other, device in DEVICE.items():
            if device and other != backend:
                assert f" {device}:" not in links, (host, device)
        env = on(lab, host, "cat /run/flannel/subnet.env").stdout
        assert f"FLANNEL_MTU={MTU[backend]}\n" in env, (host, env)
        args = on(lab, host, "tr '\\0' ' ' < /proc/$(pidof dockerd)/cmdline").stdout
        assert f"--mtu={MTU[backend]}" in args, (host, args)
    report = json.loads(cli(lab, "verify", "-i", str(inventory), "-o", "json", *IMAGE).stdout)
    assert report["ok"] and len(report["pairs"]) == 9, report["errors"]
    status = cli(lab, "status", "-i", str(inventory), "-o", "json")
    doc = json.loads(status.stdout)
    assert status.returncode == 0 and doc["ok"], doc["errors"]
    assert {lease["backend"] for lease in doc["leases"]} == {backend}
    again = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
    assert again["changes"] == 0 and again["network_config"] is None, again
    assert_no_false_alarm(lab, inventory)  # doctor, three runs, on this backend (issue #18)

    # docker restarted on each host for the new MTU, never on two hosts at once.
    windows = sorted(docker_windows(lab, since).items(), key=lambda kv: kv[1])
    assert [h for h, _ in windows] and len(windows) == 3, windows
    for (a, (_, a_end)), (b, (b_start, _)) in itertools.pairwise(windows):
        assert a_end <= b_start, f"docker down on {a} and {b} at once: {windows}"
    outage = {h: round(end - start, 1) for h, (start, end) in windows}
    print(f"docker outage per host ({backend}): {outage}")  # shown with -s
    assert_one_at_a_time(docker_windows(lab, since, "overlay-agent"), "overlay-agent")


def assert_one_at_a_time(found: dict[str, tuple[float, float]], unit: str) -> None:
    """UNIT restarted on every host, never on two hosts at once (#16's rolling restarts)."""
    windows = sorted(found.items(), key=lambda kv: kv[1])
    assert len(windows) == len(HOSTS), (unit, windows)
    for (a, (_, a_end)), (b, (b_start, _)) in itertools.pairwise(windows):
        assert a_end <= b_start, f"{unit} down on {a} and {b} at once: {windows}"


def with_docker_mode(three: Path, mode: str) -> Path:
    doc = yaml.safe_load(three.read_text())
    doc["cluster"]["docker"] = {"mode": mode}
    path = three.with_name(f"docker-{mode}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def docker_units(lab: state.LabState, host: str) -> tuple[str, bool, str]:
    """(sha256 of docker's own unit, our drop-in exists, `systemctl cat docker`)."""
    unit = on(lab, host, "systemctl show -p FragmentPath --value docker").stdout.strip()
    digest = on(lab, host, f"sha256sum {unit}").stdout.split()[0]
    dropin = on(lab, host, "test -f /etc/systemd/system/docker.service.d/overlayctl.conf")
    return digest, dropin.returncode == 0, on(lab, host, "systemctl cat docker").stdout


def test_docker_mode_switches_both_ways_like_a_fresh_init(cluster) -> None:
    """dropin -> execstart -> dropin (issue #16 item 7): each switch is in the plan, leaves what a
    fresh init in that mode leaves, and the way back restores docker's unit byte for byte."""
    lab, three = cluster
    original = {h: docker_units(lab, h)[0] for h in HOSTS}
    for mode in ("execstart", "dropin"):
        inventory = with_docker_mode(three, mode)
        plan = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
        for host in HOSTS:
            kinds = {a["kind"] for a in plan["hosts"][host]["actions"]}
            switch = {"remove-file", "edit-execstart"} if mode == "execstart" else {"restore-file"}
            assert switch <= kinds and "restart" in kinds, (mode, host, kinds)
        done = cli(lab, "init", "-i", str(inventory))
        assert done.returncode == 0, done.stdout + done.stderr
        for host in HOSTS:
            digest, dropin, shown = docker_units(lab, host)
            if mode == "execstart":
                assert not dropin and "ExecStart=/usr/sbin/dockerd" in shown
                assert "--bip=" in shown and "overlayctl.conf" not in shown
            else:
                assert dropin and digest == original[host], host
        report = json.loads(cli(lab, "verify", "-i", str(inventory), "-o", "json", *IMAGE).stdout)
        assert report["ok"], report["errors"]
        again = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
        assert again["changes"] == 0, again["hosts"]


# Each step: the changes to the inventory's cluster section, whether the network config in etcd
# changes (init needs --force), and a check on node1 that the change took effect.
STEPS = [
    ("ip-masq-on", {"ip_masq": True}, False, "iptables -t nat -S | grep -q FLANNEL-POSTRTG"),
    ("ip-masq-off", {"ip_masq": False}, False, "! iptables -t nat -S | grep -q FLANNEL-POSTRTG"),
    ("vni-port", {"backend_options": {"vni": 2, "port": 8473}}, True,
     "ip -d link show flannel.2 | grep -q 'dstport 8473' && ! ip link show flannel.1"),
    ("agent-options", {"backend_options": {"vni": 2, "port": 8473},
                       "agent_options": ["--subnet-lease-renew-margin=30"]}, False,
     "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value overlay-agent)/cmdline"
     " | grep -q -- --subnet-lease-renew-margin=30"),
    ("udp-batching", {"backend": "udp", "backend_options": {"batching": True}}, True,
     "ip link show flannel0 && grep -q FLANNEL_MTU=1472 /run/flannel/subnet.env"),
    ("back", {}, True,
     "ip link show flannel.1 && ! ip link show flannel.2 && ! ip link show flannel0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "changes", "force", "check"), STEPS, ids=[s[0] for s in STEPS])
def test_each_field_change_converges(cluster, name: str, changes: dict, force: bool, check: str):
    """ip_masq both ways, vxlan vni/port, agent_options and udp with Batching: init leaves what a
    fresh init with that inventory would (the change in effect, verify and status pass, then
    0 changes)."""
    lab, three = cluster
    doc = yaml.safe_load(three.read_text())
    doc["cluster"].update(changes)
    inventory = three.with_name(f"step-{name}.yaml")
    inventory.write_text(yaml.safe_dump(doc))
    planned = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
    assert planned["changes"] > 0, planned
    since = on(lab, "node1", "date +%s").stdout.strip()
    done = cli(lab, "init", "-i", str(inventory), *(["--force"] if force else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert on(lab, "node1", check).returncode == 0, (name, check)
    # doctor on a non-default vxlan port and VNI, and on udp with batching (issue #18)
    if name in ("vni-port", "udp-batching"):
        assert_no_false_alarm(lab, inventory, runs=1)
    assert_one_at_a_time(docker_windows(lab, since, "overlay-agent"), "overlay-agent")
    report = json.loads(cli(lab, "verify", "-i", str(inventory), "-o", "json", *IMAGE).stdout)
    assert report["ok"], report["errors"]
    status = cli(lab, "status", "-i", str(inventory), "-o", "json")
    assert status.returncode == 0, json.loads(status.stdout)["errors"]
    again = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
    assert again["changes"] == 0, again["hosts"]
