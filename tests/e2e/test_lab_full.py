"""Full lab hosts: real systemd-nspawn, systemd, OpenSSH with strict host keys, docker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlayctl.lab import cgroups, labs, state
from tests.conftest import unique_name

pytestmark = [pytest.mark.lab, pytest.mark.full]


def ssh(lab: state.LabState, host: str, command: str, **kw) -> subprocess.CompletedProcess[str]:
    """Exactly the command an operator runs from the workstation namespace."""
    argv = [
        "ip", "netns", "exec", lab.workstation_netns,
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={kw.pop('known_hosts', lab.known_hosts)}",
        "-o", "ConnectTimeout=5", "-i", str(lab.ssh_key),
        f"root@{lab.host(host).address}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)


def test_every_host_answers_over_ssh_with_systemd_running(full_lab_2) -> None:
    for host in full_lab_2.hosts:
        result = ssh(full_lab_2, host.name, "hostname; systemctl is-system-running")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [host.name, "running"]


def test_a_wrong_host_key_is_refused(full_lab_2, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    lines = full_lab_2.known_hosts.read_text().splitlines()
    # node1's entry carrying node2's key: exactly what a changed host key looks like.
    wrong.write_text(lines[0].split()[0] + " " + " ".join(lines[1].split()[1:]) + "\n")
    result = ssh(full_lab_2, "node1", "true", known_hosts=wrong)
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_files_under_etc_stay_on_their_host(full_lab_2) -> None:
    marker = f"/etc/overlayctl-test-{full_lab_2.name}"
    assert ssh(full_lab_2, "node1", f"echo node1-only > {marker}").returncode == 0
    assert ssh(full_lab_2, "node1", f"cat {marker}").stdout == "node1-only\n"
    assert ssh(full_lab_2, "node2", f"test -e {marker}").returncode == 1
    assert not os.path.exists(marker)


def test_docker_runs_a_container_from_the_offline_image(full_lab_2) -> None:
    script = (
        "systemctl start docker && "
        "docker import /usr/local/share/overlayctl-lab/busybox.tar lab/busybox:1 >/dev/null && "
        "docker run --rm --pull=never lab/busybox:1 sh -c 'echo hello from busybox; hostname'"
    )
    result = ssh(full_lab_2, "node2", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello from busybox\n")
    # Each host has its own systemd: docker started on node2 is not running on node1.
    assert ssh(full_lab_2, "node1", "systemctl is-active docker").stdout.strip() == "inactive"


def test_lab_exec_and_the_inventory(full_lab_2) -> None:
    assert labs.exec_on_host(full_lab_2.name, "node1", ["test", "-d", "/etc/systemd"]) == 0
    assert labs.exec_on_host(full_lab_2.name, "node1", ["sh", "-c", "exit 7"]) == 7
    text = full_lab_2.inventory.read_text()
    for host in full_lab_2.hosts:
        assert f"address: {host.address}" in text
    assert str(full_lab_2.known_hosts) in text


def test_a_second_up_of_the_same_name_is_refused(full_lab_2) -> None:
    cli = Path(sys.executable).parent / "overlayctl"
    result = subprocess.run(
        [str(cli), "lab", "up", "--name", full_lab_2.name, "--hosts", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4
    assert "already exists" in result.stderr


def _leftovers(lab: state.LabState) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    found += [n for n in netns.stdout.split() if n.startswith(f"ovl-{lab.name}-")]
    mounts = Path("/proc/self/mounts").read_text()
    found += [line for line in mounts.splitlines() if str(lab.dir) in line]
    for host in lab.hosts:
        found += [f"pid {p}" for p in cgroups.pids(host.cgroup)]
        found += [str(h / host.cgroup) for h in cgroups.hierarchies() if (h / host.cgroup).exists()]
        cmdline = Path(f"/proc/{host.pid}/cmdline")
        if cmdline.exists() and b"systemd-nspawn" in cmdline.read_bytes():
            found.append(f"nspawn {host.pid}")
    if lab.dir.exists():
        found.append(str(lab.dir))
    return found


def test_down_leaves_nothing_behind() -> None:
    name = unique_name("d")
    lab = labs.up(name, 2, "10.213.0.0/24", progress=lambda _m: None)
    assert ssh(lab, "node2", "systemctl start docker").returncode == 0
    assert all(cgroups.pids(h.cgroup) for h in lab.hosts)
    assert labs.down(name, progress=lambda _m: None)
    assert _leftovers(lab) == []
    assert labs.down(name, progress=lambda _m: None) is False
