"""README promises of `init`'s guard and options (issue #14), on one 4-host lab of its own, in
order: an inventory address the host does not own is refused before anything changes; a fresh
`init --parallel 1` converges host by host; the static-IP file is applied only with
`--restart-network`; `--etcd-timeout` bounds the wait for a member that cannot start.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from overlayctl.lab import state
from tests.e2e.promises import inventory, own_lab, run, sh, snapshot
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def lab() -> Iterator[state.LabState]:
    with own_lab(4, "po") as made:
        yield made


def edit(path: Path, host: str | None, **keys: object) -> None:
    """Set KEYS on HOST's entry of the inventory at PATH (None: in its `ssh` section)."""
    doc = yaml.safe_load(path.read_text())
    entry = doc["ssh"] if host is None else next(h for h in doc["hosts"] if h["name"] == host)
    entry.update(keys)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def ws(lab: state.LabState, *argv: str) -> None:
    """ARGV in the lab's workstation namespace (its own iptables, not this machine's)."""
    subprocess.run(["ip", "netns", "exec", lab.workstation_netns, *argv], check=True)


def test_an_address_the_host_does_not_own_is_refused_before_anything_changes(lab) -> None:
    """A NAT set-up: the inventory's address answers SSH (the workstation's own DNAT sends it
    to node1) but is on no interface of node1."""
    node1 = lab.host("node1").address
    nat = ("-p", "tcp", "-d", "192.168.255.200", "--dport", "22", "-j", "DNAT",
           "--to-destination", f"{node1}:22")  # fmt: skip
    folder = lab.dir / "guard"
    folder.mkdir()
    key = lab.known_hosts.read_text().splitlines()[0].split()[1:]  # node1's host key
    (folder / "known_hosts").write_text(" ".join(["192.168.255.200", *key]) + "\n")
    guard = inventory(lab, "cluster", ["node1"], folder, name="guard")
    edit(guard, "node1", address="192.168.255.200")
    edit(guard, None, known_hosts="known_hosts")
    before = snapshot(lab, "node1")
    ws(lab, "iptables", "-t", "nat", "-A", "OUTPUT", *nat)
    try:
        assert on_nat(lab, folder) == "node1\n"  # SSH to .200 reaches node1
        result, doc = run(lab, "init", "-i", str(guard))
    finally:
        ws(lab, "iptables", "-t", "nat", "-D", "OUTPUT", *nat)
    assert result.returncode == 1, result.stdout + result.stderr
    message = (
        "node1: address 192.168.255.200 is not on any interface of the host (it has: "
        f"lo 127.0.0.1/8, eth0 {node1}/24); set hosts[].address to the underlay address"
    )
    assert doc["ok"] is False and doc["changes"] == 0 and doc["hosts"] == {}
    assert doc["errors"] == [{"host": "node1", "phase": "facts", "message": message}]
    assert f"node1        facts     FAILED: {message}" in result.stderr
    assert snapshot(lab, "node1") == before  # /etc/hosts, hostname, no PKI, no etcd conf...
    gone = "test ! -e /run/overlayctl/lock && test ! -e /var/lib/overlayctl && hostname"
    assert sh(lab, "node1", gone) == "node1\n"  # no lock left, no backup made


def on_nat(lab: state.LabState, folder: Path) -> str:
    argv = ["ip", "netns", "exec", lab.workstation_netns, "ssh", "-q", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={folder}/known_hosts",
            "-i", str(lab.ssh_key), "root@192.168.255.200", "hostname"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


PHASES = ("prepare", "pki", "etcd", "agent", "docker")
PROGRESS = re.compile(r"^(node\d)\s+(\w+)\s+\d+ changes?$")
# A file written in a phase: `<t> node2: sh -c <script> /etc/hosts 644 root:root <backup>`.
WRITE = re.compile(r"^\s*[\d.]+ (node\d): sh -c <script> /\S+ \d+ \S+ /var/lib/overlayctl/backup/")


def test_init_with_parallel_1_converges_host_by_host(lab) -> None:
    three = inventory(lab, "three", THREE)
    result = cli(lab, "init", "-i", str(three), "--parallel", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    phases: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if m := PROGRESS.match(line):
            phases.setdefault(m.group(2), []).append(m.group(1))
    order = {phase: phases.get(phase) for phase in PHASES}
    assert order == dict.fromkeys(PHASES, THREE), result.stdout
    # The log: each phase's file writes of node1, then node2's, then node3's, never interleaved.
    log = Path(result.stdout.rsplit("log: ", 1)[1].strip())
    hosts = [m.group(1) for line in log.read_text().splitlines() if (m := WRITE.match(line))]
    runs = [h for i, h in enumerate(hosts) if i == 0 or hosts[i - 1] != h]
    assert len(runs) >= 15 and runs == THREE * (len(runs) // 3), runs
    status, doc = run(lab, "status", "-i", str(three))
    assert status.returncode == 0 and doc["healthy"] is True, doc
    assert sorted(lease["host"] for lease in doc["leases"]) == THREE


CALLS = "/root/ifupdown.calls"
# The lab has no ifupdown: stand-ins that only record their calls, so the lab's LAN stays up.
STUBS = (
    'for c in ifdown ifup; do printf \'#!/bin/sh\\necho "$(basename "$0") $*" >> %s\\n\' '
    f"{CALLS} > /usr/local/bin/$c; chmod 755 /usr/local/bin/$c; done"
)


def test_the_static_ip_file_is_applied_only_with_restart_network(lab) -> None:
    node3 = lab.host("node3").address
    sh(lab, "node3", STUBS)
    try:
        first = with_ifcfg(lab, "192.168.255.1")
        written, doc = run(lab, "init", "-i", str(first))
        assert written.returncode == 0 and doc["hosts"]["node3"] == {"changes": 1}, doc
        assert sh(lab, "node3", "cat /etc/network/interfaces.d/eth0").splitlines()[1:] == [
            "auto eth0",
            "iface eth0 inet static",
            f"    address {node3}/24",
            "    dns-nameservers 192.168.255.1",
        ]
        assert on(lab, "node3", f"test -e {CALLS}").returncode == 1  # written, not applied

        second = with_ifcfg(lab, "192.168.255.2")
        applied, doc = run(lab, "init", "-i", str(second), "--restart-network")
        assert applied.returncode == 0 and doc["hosts"]["node3"] == {"changes": 2}, doc
        assert sh(lab, "node3", f"cat {CALLS}") == "ifdown eth0\nifup eth0\n"
        assert "dns-nameservers 192.168.255.2" in sh(
            lab, "node3", "cat /etc/network/interfaces.d/eth0"
        )
        unchanged, doc = run(lab, "init", "-i", str(second), "--restart-network")
        assert unchanged.returncode == 0 and doc["changes"] == 0, doc
        assert sh(lab, "node3", f"cat {CALLS}") == "ifdown eth0\nifup eth0\n"  # file unchanged
    finally:
        on(lab, "node3", f"rm -f /usr/local/bin/ifdown /usr/local/bin/ifup {CALLS}")


def with_ifcfg(lab: state.LabState, dns: str) -> Path:
    path = inventory(lab, f"ifcfg-{dns}", THREE)
    edit(path, "node3", ifcfg={"prefix": 24, "dns": [dns]})
    return path


def test_etcd_timeout_bounds_the_wait_for_a_member_that_cannot_start(lab) -> None:
    """node4 alone as a new cluster, its etcd binary /bin/false: init gives up after the given
    timeout, not the default 90 s, naming the member."""
    node4 = lab.host("node4").address
    solo = inventory(lab, "cluster", ["node4"], lab.dir / "solo", name="solo")
    sh(lab, "node4", "mount --bind /bin/false /usr/bin/etcd")
    try:
        started = time.monotonic()
        result, doc = run(lab, "init", "-i", str(solo), "--etcd-timeout", "10")
        took = time.monotonic() - started
    finally:
        sh(lab, "node4", "umount /usr/bin/etcd")
    assert result.returncode == 1 and doc["ok"] is False, result.stdout + result.stderr
    (error,) = doc["errors"]
    assert error["message"].startswith(
        f"etcd not healthy after 10 s: node4 (https://{node4}:2379): "
    )
    assert f"overlayctl: error: {error['message']}" in result.stderr
    assert 10 <= took < 45, took  # the wait itself, plus connect and the first phases
    assert doc["network_config"] is None
