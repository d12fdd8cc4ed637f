"""Faults on full lab hosts: what hurts flannel and etcd users must not hurt here.

One 4-host lab (3 etcd members), traffic checked with `verify` before and after each fault.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import labs, state
from tests.e2e.test_runbook import initialised, leases, status, verify
from tests.labtools import OVERLAYCTL, cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
ETCDCTL = (
    "etcdctl --cacert=/etc/overlayctl/pki/ca.crt --cert=/etc/overlayctl/pki/etcd-client.crt"
    " --key=/etc/overlayctl/pki/etcd-client.key --endpoints=https://127.0.0.1:2379"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path, Path]]:
    with initialised(4, "vxlan") as lab_and_inventories:
        yield lab_and_inventories


def agent_pid(lab: state.LabState, host: str) -> str:
    return on(lab, host, "systemctl show -p MainPID --value overlay-agent").stdout.strip()


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
    pids = {h: agent_pid(lab, h) for h in ("node1", "node2", "node3", "node4")}
    before = leases(status(lab, every))
    restarts = [subprocess.Popen(labs.ssh_argv(lab, lab.host(h), "systemctl restart etcd"))
                for h in ("node1", "node2", "node3")]  # fmt: skip
    for proc in restarts:
        assert proc.wait(timeout=120) == 0
    wait_for(
        lambda: status(lab, every)["etcd"]["healthy"], 30, "etcd healthy after the restart", 0.5
    )
    # Still watching: a lease written now (a reservation for a host that does not exist) is
    # routed by every agent, and unrouted once deleted.
    key = "/coreos.com/network/subnets/172.21.250.0-24"
    value = '{"PublicIP":"192.168.255.200","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:fa"}}'  # noqa: E501
    assert on(lab, "node1", f"{ETCDCTL} put {key} '{value}'").returncode == 0
    for host in pids:
        wait_for(lambda h=host: route(lab, h, "172.21.250.0/24"), 30, f"{host} routes it", 0.5)
    on(lab, "node1", f"{ETCDCTL} del {key}")
    wait_for(lambda: not route(lab, "node2", "172.21.250.0/24"), 30, "route removed", 0.5)
    assert {h: agent_pid(lab, h) for h in pids} == pids
    assert leases(status(lab, every)) == before
    assert verify(lab, every)["ok"]


def test_an_agent_killed_comes_back_on_its_subnet_and_peers_keep_its_route(cluster) -> None:
    lab, _, every = cluster
    before = leases(status(lab, every))
    pid = agent_pid(lab, "node2")
    watch = ("for i in $(seq 1 60); do ip route show {s} | grep -q . || echo MISSING; "
             "sleep 0.2; done").format(s=before["node2"])  # fmt: skip
    watcher = subprocess.Popen(labs.ssh_argv(lab, lab.host("node1"), watch),
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    on(lab, "node2", f"kill -9 {pid}")
    wait_for(lambda: agent_pid(lab, "node2") not in ("0", pid), 30, "agent restarted", 0.5)
    out, _ = watcher.communicate(timeout=60)
    assert "MISSING" not in out  # node1 never dropped the route to node2's subnet
    assert leases(status(lab, every)) == before
    assert verify(lab, every)["ok"]


def test_etcd_data_lost_every_host_gets_its_subnet_back(cluster) -> None:
    lab, _, every = cluster
    before = leases(status(lab, every))
    for host in ("node1", "node2", "node3"):
        on(lab, host, f"systemctl stop etcd && rm -rf /var/lib/etcd/{host}.etcd")
    again = cli(lab, "init", "-i", str(every))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created: /coreos.com/network/config" in again.stdout
    wait_for(lambda: leases(status(lab, every)) == before, 90, "every lease back", 2)
    doc = status(lab, every)
    assert all(h["bip_ok"] for h in doc["hosts"])  # docker kept its bip
    assert verify(lab, every)["ok"]


def test_ssh_lost_mid_init_reports_the_phase_then_a_rerun_converges(cluster) -> None:
    lab, _, every = cluster
    # Work for init on node3 (the agent is reinstalled); node3's sshd is cut off the moment the
    # agent's upload folder appears there, i.e. in the middle of init's agent phase.
    on(lab, "node3", "rm /opt/overlay-agent/wheelhouse.sha256")
    cut = (
        "nohup sh -c 'for i in $(seq 1 600); do ls -d /tmp/overlayctl-agent-* >/dev/null 2>&1 "
        "&& break; sleep 0.05; done; "
        "iptables -I INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset' >/dev/null 2>&1 &"
    )
    on(lab, "node3", cut)
    broken = cli(lab, "init", "-i", str(every))
    assert broken.returncode == 1
    failed = [line for line in broken.stdout.splitlines() if "FAILED" in line]
    assert failed and all(line.startswith("node3") for line in failed), broken.stdout
    subprocess.run(["ip", "netns", "exec", lab.host("node3").netns, "iptables", "-D", "INPUT",
                    "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"],
                   check=True)  # fmt: skip
    fixed = cli(lab, "init", "-i", str(every), "--break-lock")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    changed = [
        line.split()[0]
        for line in fixed.stdout.splitlines()
        if " change" in line and not line.startswith("init:")
    ]
    assert set(changed) == {"node3"}, fixed.stdout
    assert verify(lab, every)["ok"]


def test_two_inits_at_once_the_second_is_refused(cluster) -> None:
    lab, _, every = cluster
    on(lab, "node2", "rm /opt/overlay-agent/wheelhouse.sha256")  # the first run has work
    env_argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, "init", "-i", str(every)]
    first = subprocess.Popen(env_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: on(lab, "node1", "test -d /var/lock/overlayctl.lock").returncode == 0,
             60, "the first run holds the cluster lock", 0.1)  # fmt: skip
    second = cli(lab, "init", "-i", str(every))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 4, second.stdout + second.stderr
    assert "locked by `overlayctl init`" in second.stderr
