"""The host firewall's rendered rules and unit, run against the kernel's netfilter.

In a network namespace of the test's own (nothing else sees its tables), the unit's own
command lines run in systemd's order: ExecStartPre, ExecStart (iptables-restore --noflush of
the rendered rules), twice, as a restart does, then ExecStop. What the real iptables makes of
them is read back with `iptables -S`: the rules the file says, exactly one jump to each chain
however often the unit starts, the other rules of the tables untouched, and nothing of ours
after a stop. Traffic through the rules is the e2e module's part
(tests/e2e/test_security_firewall.py).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.inventory import load_inventory
from overlayctl.plan.render import render_hosts
from tests.conftest import unique_name

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="no iptables here"),
]
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
INPUT, FORWARD = hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN


@pytest.fixture
def netns() -> Iterator[str]:
    name = unique_name("fw")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def in_ns(ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


def tables(ns: str) -> str:
    return in_ns(ns, ["sh", "-c", "iptables -S; iptables -t mangle -S"]).stdout


def exec_lines(unit: str, key: str, rules: Path) -> list[tuple[bool, list[str]]]:
    """The unit's KEY= command lines as (may fail: its '-' prefix, argv), the rules at RULES."""
    lines = []
    for line in unit.splitlines():
        if line.startswith(f"{key}="):
            command = line.removeprefix(f"{key}=").replace(hp.FIREWALL_RULES, str(rules))
            lines.append((command.startswith("-"), shlex.split(command.lstrip("-"))))
    return lines


def test_start_twice_then_stop(netns: str, tmp_path: Path) -> None:
    files = render_hosts(load_inventory(GOLDEN / "debian-tls" / "cluster.yaml")[0])["deb1"]
    rules = tmp_path / "firewall.rules"
    rules.write_bytes(files[hp.FIREWALL_RULES].content)
    unit = files[hp.FIREWALL_UNIT].content.decode()
    in_ns(netns, ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"])
    before = tables(netns)
    for _start in range(2):  # a first start, then a restart
        for may_fail, argv in [*exec_lines(unit, "ExecStartPre", rules),
                               *exec_lines(unit, "ExecStart", rules)]:  # fmt: skip
            done = in_ns(netns, argv)
            assert done.returncode == 0 or may_fail, (argv, done.stderr)
    loaded = tables(netns)
    assert loaded.count(f"-A INPUT -j {INPUT}") == 1, loaded
    assert loaded.count(f"-A FORWARD -j {FORWARD}") == 1, loaded
    assert loaded.index(f"-A INPUT -j {INPUT}") < loaded.index("--dport 22"), loaded  # first
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in loaded  # others' rules stay
    ours = [line for line in loaded.splitlines() if line.startswith(f"-A {INPUT} ")]
    assert ours[0] == f"-A {INPUT} -s 127.0.0.1/32 -p tcp -m tcp --dport 2379 -j ACCEPT"
    assert f"-A {INPUT} -p tcp -m tcp --dport 2379 -j DROP" in ours
    assert ours[-1] == f"-A {INPUT} -p tcp -m tcp --dport 2380 -j DROP"
    dropped = [line for line in loaded.splitlines() if line.startswith(f"-A {FORWARD} ")]
    assert dropped and all(" -s 10.244.0.0/16 " in d and d.endswith("-j DROP") for d in dropped)
    for _may_fail, argv in exec_lines(unit, "ExecStop", rules):
        in_ns(netns, argv)
    assert tables(netns) == before
