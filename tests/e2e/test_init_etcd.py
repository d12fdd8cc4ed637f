"""`init`, `plan` and `status` on the shared cluster's three initialised full lab hosts: real
sshd, systemd, etcd with TLS. Every command names the `three` inventory: the lab's default one
lists node4 too, which is booted but outside the cluster."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from overlayctl.lab import state
from tests.e2e.conftest import Cluster
from tests.labtools import cli, main_pids, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
CA = "/etc/overlayctl/pki/ca.crt"
# The admin identity (CN root) a member holds; the host's own (etcd-client.*) is least privilege.
CLIENT = ("--cert=/etc/overlayctl/pki/etcd-admin.crt", "--key=/etc/overlayctl/pki/etcd-admin.key")
HOSTS = ["node1", "node2", "node3"]  # the cluster: the `three` inventory


def endpoints(lab: state.LabState, scheme: str = "https") -> str:
    return ",".join(f"{scheme}://{lab.host(h).address}:2379" for h in HOSTS)


@pytest.fixture(scope="module")
def initialised(shared_cluster: Cluster) -> state.LabState:
    first = shared_cluster.first_init  # the cluster's first init: exit 0 checked by the fixture
    assert "3 members healthy" in first.stdout
    assert "created: /coreos.com/network/config" in first.stdout
    return shared_cluster.lab


@pytest.fixture(scope="module")
def three(shared_cluster: Cluster) -> tuple[str, str]:
    """`-i <the three inventory>`, for every command of this module."""
    return ("-i", str(shared_cluster.three))


def test_etcdctl_on_node2_with_the_client_cert_lists_three_started_members(initialised) -> None:
    cmd = f"etcdctl --endpoints={endpoints(initialised)} --cacert={CA} {' '.join(CLIENT)} "
    result = on(initialised, "node2", cmd + "member list -w json")
    assert result.returncode == 0, result.stderr
    members = json.loads(result.stdout)["members"]
    assert sorted(m["name"] for m in members) == ["node1", "node2", "node3"]
    assert all(m["clientURLs"] and m["clientURLs"][0].startswith("https://") for m in members)


def test_plain_http_and_certless_clients_are_refused(initialised) -> None:
    node1 = initialised.host("node1").address
    plain = f"etcdctl --endpoints=http://{node1}:2379 --dial-timeout=2s get /x"
    assert on(initialised, "node2", plain).returncode != 0
    certless = (
        f"etcdctl --endpoints=https://{node1}:2379 --cacert={CA} --dial-timeout=2s "
        "--command-timeout=3s get /x"
    )
    assert on(initialised, "node2", certless).returncode != 0
    # The same request with the client certificate goes through: it was the missing cert.
    assert on(initialised, "node2", certless + " " + " ".join(CLIENT)).returncode == 0


def test_keys_on_hosts_are_private(initialised) -> None:
    out = on(initialised, "node1", "stat -c '%a %U %n' /etc/overlayctl/pki/*.key").stdout
    lines = sorted(out.split("\n")[:-1])
    assert lines == sorted(
        [
            "600 root /etc/overlayctl/pki/etcd-admin.key",
            "600 root /etc/overlayctl/pki/etcd-client.key",
            "600 etcd /etc/overlayctl/pki/etcd-peer.key",
            "600 etcd /etc/overlayctl/pki/etcd-server.key",
        ]
    )


def test_second_init_changes_nothing_and_restarts_nothing(initialised, three) -> None:
    before = main_pids(initialised, HOSTS)  # etcd, the agent and docker on every host
    result = cli(initialised, "init", *three)
    assert result.returncode == 0, result.stderr
    assert "init: 0 changes on 3 hosts" in result.stdout
    assert "unchanged: /coreos.com/network/config" in result.stdout
    assert main_pids(initialised, HOSTS) == before


def test_status_reports_a_healthy_cluster_in_json(initialised, three) -> None:
    result = cli(initialised, "status", "-o", "json", *three)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["etcd"]["healthy"] is True
    assert sorted(m["name"] for m in doc["etcd"]["members"]) == ["node1", "node2", "node3"]
    assert sum(m["leader"] for m in doc["etcd"]["members"]) == 1
    assert all(m["healthy"] for m in doc["etcd"]["members"])
    assert doc["network_config"] == {"Network": "172.21.0.0/16", "Backend": {"Type": "vxlan"}}
    verbose = cli(initialised, "status", "-v", *three)
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    printed = verbose.stdout.split("\nOn any member, as root:\n", 1)[1].splitlines()
    assert len(printed) == 2, verbose.stdout  # endpoint health, member list
    for line in printed:
        command = line.strip()
        assert command.startswith(f"ETCDCTL_API=3 etcdctl --endpoints={endpoints(initialised)}")
        # As printed, on a member: it must work there, TLS flags included.
        ran = on(initialised, "node2", command)
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        if shlex.split(command)[-4:] == ["member", "list", "-w", "table"]:
            assert all(f"| {h} " in ran.stdout for h in HOSTS), ran.stdout


def test_a_hand_edit_shows_in_plan_exactly_and_init_restores_it(initialised, three) -> None:
    assert on(initialised, "node3", "echo '10.9.9.9 intruder' >> /etc/hosts").returncode == 0
    result = cli(initialised, "plan", "-o", "json", *three)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["errors"] == [] and doc["changes"] == 1
    plans = doc["hosts"]
    assert {n: p["changes"] for n, p in plans.items()} == {"node1": 0, "node2": 0, "node3": 1}
    (change,) = plans["node3"]["files"]
    assert change["path"] == "/etc/hosts" and change["kind"] == "update"
    removed = [
        line
        for line in change["diff"].splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    assert removed == ["-10.9.9.9 intruder"]
    assert all(
        not line.startswith("+") or line.startswith("+++") for line in change["diff"].splitlines()
    )
    fixed = cli(initialised, "init", *three)
    assert "init: 1 change on 3 hosts" in fixed.stdout, fixed.stdout  # singular since 58bc301
    assert "intruder" not in on(initialised, "node3", "cat /etc/hosts").stdout
    assert on(initialised, "node3", "test -f /var/lib/overlayctl/backup/etc/hosts").returncode == 0


def test_a_run_holding_the_lock_is_named_and_can_be_broken(initialised, three) -> None:
    holder = '{"command": "overlayctl init", "user": "alice", "workstation": "ws9", "pid": 4242}'
    on(
        initialised,
        "node1",
        f"mkdir /run/overlayctl/lock && echo '{holder}' > /run/overlayctl/lock/holder",
    )
    refused = cli(initialised, "init", *three)
    assert refused.returncode == 4  # a conflict: nothing was done anywhere
    assert "node1: locked by `overlayctl init` by alice@ws9 (pid 4242)" in refused.stderr
    assert cli(initialised, "init", "--break-lock", *three).returncode == 0
    assert on(initialised, "node1", "test -e /run/overlayctl/lock").returncode == 1


def loose_ssh(lab: state.LabState, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """COMMAND on HOST over SSH WITHOUT checking its host key (reaches a host whose key changed)."""
    argv = ["ip", "netns", "exec", lab.workstation_netns, "ssh", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-i", str(lab.ssh_key), f"root@{lab.host(host).address}", command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_changed_host_key_is_refused_and_that_host_untouched(initialised, three) -> None:
    # node2 gets a new host key (as after a reinstall or an attack), and a hand edit. Both are
    # undone at the end: the shared cluster goes on with node2's recorded key.
    keep = "mkdir /root/hostkey-kept && cp -a /etc/ssh/ssh_host_ed25519_key* /root/hostkey-kept/"
    assert on(initialised, "node2", keep).returncode == 0
    try:
        on(initialised, "node2", "echo '10.8.8.8 edited' >> /etc/hosts")
        regen = (
            "rm -f /etc/ssh/ssh_host_ed25519_key* && "
            "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && "
            "systemctl restart ssh"
        )
        on(initialised, "node2", regen)
        result = cli(initialised, "init", *three)
        assert result.returncode == 1
        assert "node2" in result.stdout and "HOST KEY CHANGED" in result.stdout
        # nothing was done there: the hand edit is still in place (checked past the key check)
        assert "10.8.8.8 edited" in loose_ssh(initialised, "node2", "cat /etc/hosts").stdout
    finally:
        back = (
            "cp -a /root/hostkey-kept/* /etc/ssh/ && rm -r /root/hostkey-kept && "
            "sed -i '/^10.8.8.8 edited$/d' /etc/hosts && systemctl restart ssh"
        )
        assert loose_ssh(initialised, "node2", back).returncode == 0
    assert on(initialised, "node2", "true").returncode == 0  # the recorded key works again
    again = cli(initialised, "init", *three)
    assert "init: 0 changes on 3 hosts" in again.stdout, again.stdout + again.stderr
