"""Light lab hosts: real namespaces, real bridge and veths, real ping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_two_light_hosts_ping_each_other_over_the_lan(light_lab) -> None:
    a = light_lab.add_host("h1")
    b = light_lab.add_host("h2")
    for src, dst in ((a, b), (b, a)):
        out = src.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", dst.address]).stdout
        assert " 0% packet loss" in out
    assert a.run(["hostname"]).stdout.strip() == "h1"
    assert b.run(["hostname"]).stdout.strip() == "h2"


def test_light_hosts_keep_their_files_and_sysctls_to_themselves(light_lab) -> None:
    a = light_lab.add_host("h1")
    b = light_lab.add_host("h2")
    marker = f"/etc/overlayctl-light-{light_lab.name}"
    a.run(["sh", "-c", f"echo mine > {marker}"])
    a.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    assert a.run(["cat", marker]).stdout == "mine\n"
    assert b.run(["test", "-e", marker], check=False).returncode == 1
    assert not os.path.exists(marker)
    assert b.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    # Only net.* is writable: vm.* or kernel.* would change the real machine.
    denied = a.run(["sh", "-c", "echo 1 > /proc/sys/vm/overcommit_memory"], check=False)
    assert denied.returncode != 0 and "Read-only" in denied.stderr


def test_closing_a_light_lab_leaves_no_namespace_or_process() -> None:
    from overlayctl.lab.light import LightLab
    from tests.conftest import unique_name

    lab = LightLab(unique_name("l"))
    host = lab.add_host("h1")
    pid = host.pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    made = {lab.switch, host.netns}
    assert made <= _netns_names()
    lab.close()
    assert not made & _netns_names()
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or ") Z " in stat.read_text()  # gone, or a zombie awaiting reaping
    assert not lab.base.exists()
