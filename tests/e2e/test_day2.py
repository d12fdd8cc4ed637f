"""Day 2 on the shared cluster (issue #16): commands run by mistake must not break it, and
`status` must tell the truth when something is down. Each test leaves the cluster as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.labtools import ETCDCTL, cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
HOSTS = ("node1", "node2", "node3")
UNITS = ("etcd", "overlay-agent", "docker")


def fingerprints(lab: state.LabState) -> dict[str, str]:
    """Every host's PKI files and its units' PIDs: what a run by mistake must leave alone."""
    units = " ".join(UNITS)
    probe = f"sha256sum /etc/overlayctl/pki/*; systemctl show -p MainPID --value {units}"
    return {h: on(lab, h, probe).stdout for h in HOSTS}


def status_doc(lab: state.LabState, inventory: Path) -> tuple[int, dict]:
    result = cli(lab, "status", "-i", str(inventory), "-o", "json")
    return result.returncode, json.loads(result.stdout)


def test_a_second_state_folder_is_refused_before_anything_changes(shared_cluster) -> None:
    lab, three, _ = shared_cluster
    elsewhere = lab.dir / "copy-of-the-inventory"
    elsewhere.mkdir()
    try:
        copy = elsewhere / "cluster.yaml"
        shutil.copy(three, copy)
        before = fingerprints(lab)
        for command in ("plan", "init"):
            result = cli(lab, command, "-i", str(copy), "-o", "json")
            doc = json.loads(result.stdout)
            assert result.returncode == 4, result.stdout + result.stderr
            (error,) = doc["errors"]
            assert "trust a CA this state folder did not make" in error["message"]
            assert "node1 (sha256 " in error["message"] and "has no CA yet" in error["message"]
        assert not list(elsewhere.glob("overlayctl-state/*/pki"))  # no new CA made here either
        assert fingerprints(lab) == before  # nothing pushed, nothing restarted
    finally:
        shutil.rmtree(elsewhere)
    assert status_doc(lab, three)[1]["ok"] is True


def test_status_counts_a_stopped_docker_as_unhealthy(shared_cluster) -> None:
    lab, three, _ = shared_cluster
    assert on(lab, "node2", "systemctl stop docker docker.socket").returncode == 0
    try:
        code, doc = status_doc(lab, three)
        assert code == 1 and doc["ok"] is False
        node2 = next(h for h in doc["hosts"] if h["name"] == "node2")
        assert node2["docker_active"] is False
        assert {"host": "node2", "phase": "host", "message": "docker is not running"} in doc[
            "errors"
        ]
    finally:
        assert on(lab, "node2", "systemctl start docker").returncode == 0
    wait_for(lambda: status_doc(lab, three)[0] == 0, 60, "status healthy again", 1)


def test_a_login_that_cannot_act_as_root_stops_before_any_phase(shared_cluster) -> None:
    """ssh.user without root rights: one line, exit 3, for status as for init; no lock left."""
    lab, three, _ = shared_cluster
    pub = Path(str(lab.ssh_key) + ".pub").read_text()
    add = (
        "id ops >/dev/null 2>&1 || useradd -m -s /bin/sh ops; install -d -m 700 -o ops ~ops/.ssh; "
        f"printf '%s\\n' '{pub.strip()}' > ~ops/.ssh/authorized_keys; "
        "chown ops ~ops/.ssh/authorized_keys"
    )
    for host in HOSTS:
        assert on(lab, host, add).returncode == 0
    inventory = lab.dir / "ops.yaml"
    inventory.write_text(three.read_text().replace("user: root", "user: ops"))
    sudo = lab.dir / "ops-sudo.yaml"
    sudo.write_text(three.read_text().replace("user: root", "user: ops\n  sudo: true"))
    try:
        before = fingerprints(lab)
        for command in ("status", "init", "plan"):
            result = cli(lab, command, "-i", str(inventory))
            assert result.returncode == 3, (command, result.stdout, result.stderr)
            assert "logged in as ops (uid " in result.stderr and "not root" in result.stderr
            assert "quorum" not in result.stdout + result.stderr
        refused = cli(lab, "init", "-i", str(sudo))
        assert refused.returncode == 3
        assert "cannot act as root through sudo as ops" in refused.stderr, refused.stderr
        assert on(lab, "node1", "test -e /run/overlayctl/lock").returncode == 1
        assert fingerprints(lab) == before
    finally:
        for host in HOSTS:
            on(lab, host, "userdel -r ops")
        inventory.unlink(missing_ok=True)
        sudo.unlink(missing_ok=True)


def test_status_without_quorum_still_reports_what_it_can(shared_cluster) -> None:
    """Two of three members down: every section it can fill, `unavailable`, JSON, in 15 s."""
    import time

    lab, three, _ = shared_cluster
    for host in ("node2", "node3"):
        assert on(lab, host, "systemctl stop etcd").returncode == 0
    try:
        started = time.monotonic()
        code, doc = status_doc(lab, three)
        took = time.monotonic() - started
        assert code == 1 and doc["ok"] is False and took <= 15, (code, took)
        assert doc["etcd"]["state"] == "unavailable" and doc["etcd"]["quorum"] is False
        assert doc["leases"] is None  # unknown, not "no leases"
        assert [h["name"] for h in doc["hosts"]] == list(HOSTS)
        assert all(h["agent_active"] and h["docker_active"] for h in doc["hosts"])  # from hosts
        assert any(e["phase"] == "etcd" for e in doc["errors"])
        table = cli(lab, "status", "-i", str(three))
        assert table.returncode == 1 and "UNAVAILABLE: no quorum" in table.stdout
        assert "leases: (unknown: etcd did not answer)" in table.stdout
    finally:
        for host in ("node2", "node3"):
            on(lab, host, "systemctl start --no-block etcd")
    wait_for(lambda: status_doc(lab, three)[0] == 0, 90, "quorum and health back", 2)


def test_status_names_a_missing_fdb_entry_and_a_lease_gone_from_etcd(shared_cluster) -> None:
    """The two holes status had (issue #16): a peer's fdb entry deleted on node1, and node3's
    lease deleted in etcd while its agent is stopped (a running agent takes it back at once)."""
    lab, three, _ = shared_cluster
    code, doc = status_doc(lab, three)
    assert code == 0, doc["errors"]
    node2 = next(le for le in doc["leases"] if le["host"] == "node2")
    mac = on(lab, "node2", "cat /sys/class/net/flannel.1/address").stdout.strip()
    delete = f"bridge fdb del {mac} dev flannel.1 dst {node2['public_ip']}"
    assert on(lab, "node1", delete).returncode == 0
    try:
        code, doc = status_doc(lab, three)
        assert code == 1
        expected = f"missing fdb entries for {node2['subnet']}"
        assert {"host": "node1", "phase": "host", "message": expected} in doc["errors"]
    finally:
        on(lab, "node1", f"bridge fdb append {mac} dev flannel.1 dst {node2['public_ip']} "
           "self permanent")  # fmt: skip
    node3 = next(le for le in doc["leases"] if le["host"] == "node3")
    key = f"/coreos.com/network/subnets/{node3['subnet'].replace('/', '-')}"
    assert on(lab, "node3", "systemctl stop overlay-agent").returncode == 0
    try:
        assert on(lab, "node1", f"{ETCDCTL} del {key}").stdout.strip() == "1"
        code, doc = status_doc(lab, three)
        assert code == 1
        gone = (
            f"its lease {node3['subnet'].replace('.0/', '.1/')} is not in etcd (deleted or expired)"
        )
        assert {"host": "node3", "phase": "host", "message": gone} in doc["errors"], doc["errors"]
    finally:
        assert on(lab, "node3", "systemctl start overlay-agent").returncode == 0
    wait_for(lambda: status_doc(lab, three)[0] == 0, 60, "status healthy again", 1)


def test_fields_fixed_on_a_running_cluster_are_refused_naming_the_runbook(shared_cluster) -> None:
    """cluster.tls, cluster.network and the cluster name changed in the inventory: plan and init
    exit 4 with the way forward, before anything is written or restarted (issue #16's matrix)."""
    lab, three, _ = shared_cluster
    text = three.read_text()
    changed = {
        "tls": text.replace("cluster:\n", "cluster:\n  tls: false\n", 1),
        "network": text.replace("network: 172.21.0.0/16", "network: 172.22.0.0/16"),
        "name": text.replace(f"name: {lab.name}", f"name: {lab.name}x", 1),
    }
    assert all(t != text for t in changed.values())
    before = fingerprints(lab)
    for field, variant in changed.items():
        inventory = lab.dir / f"{field}-changed.yaml"
        inventory.write_text(variant)
        try:
            for command in ("plan", "init"):
                result = cli(lab, command, "-i", str(inventory), "-o", "json")
                assert result.returncode == 4, (field, command, result.stdout, result.stderr)
                (error,) = json.loads(result.stdout)["errors"]
                if field == "name":  # another name is another state folder: its own CA
                    assert "trust a CA this state folder did not make" in error["message"]
                else:
                    assert "cannot change on a running cluster" in error["message"], error
                    assert "docs/runbooks/change-network.md" in error["message"], error
        finally:
            inventory.unlink()
    # The renamed cluster's refused runs left their logs in a state folder of that name.
    shutil.rmtree(lab.dir / "overlayctl-state" / f"{lab.name}x", ignore_errors=True)
    assert fingerprints(lab) == before
    assert status_doc(lab, three)[1]["ok"] is True


def test_status_names_an_agent_that_runs_but_does_not_answer_ready(shared_cluster) -> None:
    """A hung agent (SIGSTOP): systemd still says active, /readyz does not answer; status must
    name it, exit 1, and be healthy again once the agent continues."""
    lab, three, _ = shared_cluster
    pid = on(lab, "node3", "systemctl show -p MainPID --value overlay-agent").stdout.strip()
    assert pid.isdigit() and pid != "0", pid
    assert on(lab, "node3", f"kill -STOP {pid}").returncode == 0
    try:
        code, doc = status_doc(lab, three)
        assert code == 1 and doc["ok"] is False
        node3 = next(h for h in doc["hosts"] if h["name"] == "node3")
        assert node3["agent_active"] is True and node3["agent_ready"] is False, node3
        expected = {
            "host": "node3",
            "phase": "host",
            "message": "overlay-agent is not ready (/readyz)",
        }
        assert expected in doc["errors"], doc["errors"]
        table = cli(lab, "status", "-i", str(three))
        assert table.returncode == 1, table.stdout + table.stderr
        rows = [line.split() for line in table.stdout.splitlines() if line.startswith("node3 ")]
        assert ["yes", "NO"] in [row[1:3] for row in rows], rows  # hosts: active yes, ready NO
    finally:
        assert on(lab, "node3", f"kill -CONT {pid}").returncode == 0
    wait_for(lambda: status_doc(lab, three)[0] == 0, 60, "status healthy again", 1)


def test_status_names_docker0_off_its_lease(shared_cluster) -> None:
    """docker0 holding another address than its lease's .1 (docker's default bridge back)."""
    lab, three, _ = shared_cluster
    code, doc = status_doc(lab, three)
    assert code == 0, doc["errors"]
    lease = next(h for h in doc["hosts"] if h["name"] == "node2")["lease"]
    assert lease and lease.endswith(".1/24"), lease
    swap = f"ip addr del {lease} dev docker0 && ip addr add 172.17.0.1/16 dev docker0"
    assert on(lab, "node2", swap).returncode == 0
    try:
        code, doc = status_doc(lab, three)
        assert code == 1 and doc["ok"] is False
        node2 = next(h for h in doc["hosts"] if h["name"] == "node2")
        assert node2["bip_ok"] is False and node2["docker0"] == "172.17.0.1/16", node2
        expected = f"docker0 is 172.17.0.1/16, not the lease's {lease}"
        assert {"host": "node2", "phase": "host", "message": expected} in doc["errors"]
    finally:
        on(lab, "node2", f"ip addr del 172.17.0.1/16 dev docker0; ip addr add {lease} dev docker0")
    wait_for(lambda: status_doc(lab, three)[0] == 0, 60, "status healthy again", 1)


def test_status_names_a_host_it_cannot_reach_over_ssh(shared_cluster) -> None:
    """node3's sshd refuses (a reset from its own firewall, set from outside SSH through its
    network namespace): status says so for node3, still reports the others and etcd, exit 1."""
    lab, three, _ = shared_cluster
    inside = ["ip", "netns", "exec", lab.host("node3").netns, "iptables"]  # node3's own
    rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run([*inside, "-I", *rule], check=True, timeout=30)
    try:
        code, doc = status_doc(lab, three)
        assert code == 1 and doc["ok"] is False
        assert [e["phase"] for e in doc["errors"] if e["host"] == "node3"] == ["connect"], doc
        others = {h["name"]: h for h in doc["hosts"] if h["name"] in ("node1", "node2")}
        assert all(h["agent_active"] and h["bip_ok"] for h in others.values()), others
        assert doc["etcd"]["quorum"] is True  # node3's etcd still answers its peers
    finally:
        subprocess.run([*inside, "-D", *rule], check=True, timeout=30)
    wait_for(lambda: status_doc(lab, three)[0] == 0, 60, "status healthy again", 1)
