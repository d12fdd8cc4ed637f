"""Faults on full lab hosts: what hurts flannel and etcd users must not hurt here.

One 4-host lab (3 etcd members), traffic checked with `verify` before and after each fault.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import labs, state
from tests.e2e.faults import ssh_cut_when
from tests.e2e.test_runbook import EVERY, initialised, lease_pairs, same_leases, status, verify
from tests.labtools import ETCDCTL, OVERLAYCTL, cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path, Path]]:
    with initialised(4, "vxlan") as lab_and_inventories:
        yield lab_and_inventories


def agent_pid(lab: state.LabState, host: str) -> str:
    return on(lab, host, "systemctl show -p MainPID --value overlay-agent").stdout.strip()


def every_lease(lab: state.LabState, every: Path) -> list[tuple[str, str]]:
    """lease_pairs of the cluster, which must hold exactly one lease per host."""
    pairs = lease_pairs(status(lab, every))
    assert [host for host, _ in pairs] == EVERY, pairs
    return pairs


def route(lab: state.LabState, host: str, subnet: str) -> bool:
    return on(lab, host, f"ip route show {subnet}").stdout.strip() != ""


def test_one_member_down_degrades_but_the_cluster_works_and_grows(cluster) -> None:
    lab, three, every = cluster
    on(lab, "node3", "systemctl stop etcd")
    doc = status(lab, three)
    assert doc["etcd"]["state"] == "degraded" and doc["etcd"]["quorum"] is True
    assert cli(lab, "status", "-i", str(three)).returncode == 1
    assert verify(lab, three)["ok"]
    joined = cli(lab, "join", "-i", str(every), "node4")  # node4: a node, not an etcd member
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert verify(lab, every)["ok"]
    on(lab, "node3", "systemctl start etcd")
    wait_for(lambda: status(lab, every)["etcd"]["healthy"], 30, "etcd healthy again", 0.5)


def test_all_of_etcd_restarted_agents_resume_without_restarting(cluster) -> None:
    lab, _, every = cluster
    pids = {h: agent_pid(lab, h) for h in EVERY}
    before = every_lease(lab, every)
    restarts = [subprocess.Popen(labs.ssh_argv(lab, lab.host(h), "systemctl restart etcd"))
                for h in ("node1", "node2", "node3")]  # fmt: skip
    for proc in restarts:
        assert proc.wait(timeout=120) == 0
    wait_for(
        lambda: status(lab, every)["etcd"]["healthy"], 30, "etcd healthy after the restart", 0.5
    )
    # Still watching: a lease written now (for an address no host has, admitted to the
    # allow-list by the admin first: every agent refuses a lease naming its own address) is
    # routed by every agent, and unrouted once deleted.
    key = "/coreos.com/network/subnets/172.21.250.0-24"
    value = '{"PublicIP":"192.168.255.200","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:fa"}}'  # noqa: E501
    allowlist = "/coreos.com/network/allowed-public-ips"
    allowed = json.loads(on(lab, "node1", f"{ETCDCTL} get {allowlist} --print-value-only").stdout)
    wider = json.dumps({"PublicIPs": [*allowed["PublicIPs"], "192.168.255.200"]})
    try:
        assert on(lab, "node1", f"{ETCDCTL} put {allowlist} '{wider}'").returncode == 0
        assert on(lab, "node1", f"{ETCDCTL} put {key} '{value}'").returncode == 0
        for host in pids:
            wait_for(lambda h=host: route(lab, h, "172.21.250.0/24"), 30, f"{host} routes it", 0.5)
    finally:
        on(lab, "node1", f"{ETCDCTL} del {key}")
        on(lab, "node1", f"{ETCDCTL} put {allowlist} '{json.dumps(allowed)}'")
    wait_for(lambda: not route(lab, "node2", "172.21.250.0/24"), 30, "route removed", 0.5)
    assert {h: agent_pid(lab, h) for h in pids} == pids
    same_leases(lease_pairs(status(lab, every)), before)
    assert verify(lab, every)["ok"]


def test_an_agent_killed_comes_back_on_its_subnet_and_peers_keep_its_route(cluster) -> None:
    lab, _, every = cluster
    before = every_lease(lab, every)
    pid = agent_pid(lab, "node2")
    # DONE: the loop ran to its end (an SSH failure prints nothing, and no MISSING either).
    watch = ("for i in $(seq 1 60); do ip route show {s} | grep -q . || echo MISSING; "
             "sleep 0.2; done; echo DONE").format(s=dict(before)["node2"])  # fmt: skip
    watcher = subprocess.Popen(labs.ssh_argv(lab, lab.host("node1"), watch), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert on(lab, "node2", f"kill -9 {pid}").returncode == 0
    wait_for(lambda: agent_pid(lab, "node2") not in ("0", pid), 30, "agent restarted", 0.5)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0 and out.endswith("DONE\n"), (watcher.returncode, out, err)
    assert "MISSING" not in out  # node1 never dropped the route to node2's subnet
    same_leases(lease_pairs(status(lab, every)), before)
    assert verify(lab, every)["ok"]


def test_etcd_data_lost_every_host_gets_its_subnet_back(cluster) -> None:
    lab, _, every = cluster
    before = every_lease(lab, every)
    for host in ("node1", "node2", "node3"):
        on(lab, host, f"systemctl stop etcd && rm -rf /var/lib/etcd/{host}.etcd")
    again = cli(lab, "init", "-i", str(every))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created: /coreos.com/network/config" in again.stdout
    wait_for(lambda: lease_pairs(status(lab, every)) == before, 90, "every lease back", 2)
    doc = status(lab, every)
    assert all(h["bip_ok"] for h in doc["hosts"])  # docker kept its bip
    assert verify(lab, every)["ok"]


def test_ssh_lost_mid_init_reports_the_phase_then_a_rerun_converges(cluster) -> None:
    lab, _, every = cluster
    # Work for init on node3: the agent is reinstalled, and its running process says it started
    # from an older install (as after an upgrade of overlayctl), so a restart is owed too.
    # node3's sshd is cut off the moment the agent's upload folder appears there, i.e. in the
    # middle of init's agent phase: the install may be cut, or finish behind the cut (the upload
    # is small) with only the restart left. The cut fires only then (faults.ssh_cut_when).
    older = "echo older-install > /run/flannel/overlay-agent.digest"
    assert on(lab, "node3", f"rm /opt/overlay-agent/wheelhouse.sha256 && {older}").returncode == 0
    with ssh_cut_when(lab, "node3", "ls -d /tmp/overlayctl-agent-* >/dev/null 2>&1") as cut:
        started = time.time()  # the hosts share this machine's clock
        broken = cli(lab, "init", "-i", str(every))
        ended = time.time()
    assert cut.fired, f"the cut never fired\n{broken.stdout}{broken.stderr}"
    assert started < cut.fired < ended, f"cut at {cut.fired}, init ran {started}..{ended}"
    assert broken.returncode == 1, broken.stdout + broken.stderr
    failed = [line for line in broken.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and re.match(r"node3 +agent +FAILED: ", failed[0]), broken.stdout
    fixed = cli(lab, "init", "-i", str(every), "--break-lock")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    changed = [
        line.split()[0]
        for line in fixed.stdout.splitlines()
        if " change" in line and not line.startswith("init:")
    ]
    assert set(changed) == {"node3"}, fixed.stdout
    # Its agent now runs the install in place (restarted whether or not the cut run had
    # finished the install: a restart owed is found from the running agent, not from files).
    digests = "cat /opt/overlay-agent/wheelhouse.sha256 /run/flannel/overlay-agent.digest"
    installed, running = on(lab, "node3", digests).stdout.split()
    assert installed == running, (installed, running)
    assert verify(lab, every)["ok"]


def test_two_inits_at_once_the_second_is_refused(cluster) -> None:
    lab, _, every = cluster
    on(lab, "node2", "rm /opt/overlay-agent/wheelhouse.sha256")  # the first run has work
    env_argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, "init", "-i", str(every)]
    first = subprocess.Popen(env_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: on(lab, "node1", "test -d /run/overlayctl/lock").returncode == 0,
             60, "the first run holds the cluster lock", 0.1)  # fmt: skip
    second = cli(lab, "init", "-i", str(every))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 4, second.stdout + second.stderr
    assert "locked by `overlayctl init`" in second.stderr
