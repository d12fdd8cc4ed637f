"""`-o json` as an operator pipes it to jq, against real SSH: one document on stdout with `ok`
and `errors` when hosts are unreachable or half the cluster answers, progress on stderr, and a
`plan` that writes nothing locally.

Hosts: a network namespace of the test's own holds 192.168.77.1-3 on its loopback; a real sshd
listens on .1 inside it (this machine's files, read-only commands only: facts, files, status)
and nothing on .2 and .3 (connection refused). overlayctl runs inside that namespace too, so no
packet leaves it. No command here that changes a host ever reaches one: those run against
unreachable hosts only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unique_name
from tests.sshd import LocalSshd, start_sshd

pytestmark = pytest.mark.lab

OVERLAYCTL = str(Path(sys.executable).parent / "overlayctl")
UP, DOWN, DOWN2 = "192.168.77.1", "192.168.77.2", "192.168.77.3"


@pytest.fixture
def netns_sshd(tmp_path: Path) -> Iterator[tuple[str, LocalSshd]]:
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and openssh-server")
    ns = unique_name("ovl-jq-")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for address in (UP, DOWN, DOWN2):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"],
                           check=True)  # fmt: skip
        sshd = start_sshd(tmp_path / "sshd", netns=ns, address=UP)
        try:
            yield ns, sshd
        finally:
            sshd.stop()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def inventory(tmp_path: Path, netns_sshd, hosts: list[tuple[str, str]]) -> Path:
    ns, sshd = netns_sshd
    (tmp_path / "netns").write_text(ns)
    lines = "".join(f"  - {{name: {n}, address: {a}}}\n" for n, a in hosts)
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "cluster: {name: jq, network: 172.21.0.0/16}\n"
        f"ssh: {{port: {sshd.port}, key: {sshd.client_key}, known_hosts: {sshd.known_hosts}}}\n"
        f"hosts:\n{lines}"
    )
    return path


def run(inv: Path, *args: str) -> tuple[int, dict, str]:
    """overlayctl ARGS -o json from the inventory's folder, inside the test's namespace; stdout
    must be exactly one JSON document."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAYCTL_")}
    ns = inv.parent.joinpath("netns").read_text()
    done = subprocess.run(
        ["ip", "netns", "exec", ns, OVERLAYCTL, *args, "-i", str(inv), "-o", "json"],
        capture_output=True, text=True,
        cwd=inv.parent, env=env, timeout=240, check=False,
    )  # fmt: skip
    doc = json.loads(done.stdout)  # raises on anything but exactly one document
    assert isinstance(doc["ok"], bool) and isinstance(doc["errors"], list)
    for error in doc["errors"]:
        assert set(error) == {"host", "phase", "message"}
    return done.returncode, doc, done.stderr


def by_host(doc: dict) -> dict[str, str]:
    return {e["host"]: e["message"] for e in doc["errors"] if e["host"]}


@pytest.fixture
def half(tmp_path: Path, netns_sshd) -> Path:
    """node1 answers over SSH, node2 does not."""
    return inventory(tmp_path, netns_sshd, [("node1", UP), ("node2", DOWN)])


@pytest.fixture
def none_up(tmp_path: Path, netns_sshd) -> Path:
    return inventory(tmp_path, netns_sshd, [("node1", DOWN), ("node2", DOWN2)])


def test_status_with_one_host_unreachable_and_no_etcd(half: Path) -> None:
    code, doc, err = run(half, "status")
    assert code == 1 and doc["ok"] is False and doc["healthy"] is False
    assert "SSH port" in by_host(doc)["node2"] and "refused" in by_host(doc)["node2"]
    # etcd did not answer through node1 (no etcd here): said, not hidden.
    assert doc["etcd"]["errors"] and any(e["phase"] == "etcd" for e in doc["errors"])
    assert {h["name"] for h in doc["hosts"]} == {"node1", "node2"}
    assert "FAILED" in err  # progress went to stderr


def test_plan_reports_each_host_and_writes_nothing_here(half: Path) -> None:
    """This machine has no systemd as PID 1, so node1 stops at facts: a host-level error, after
    the PKI a first `init` would make was made in memory only. (plan's success document is
    checked on lab hosts: tests/e2e/test_init_etcd.py.)"""
    before = sorted(p.name for p in half.parent.iterdir())
    code, doc, err = run(half, "plan")
    assert code == 1 and doc["ok"] is False, doc
    assert doc["hosts"] == {} and doc["changes"] == 0
    failed = {e["host"]: e for e in doc["errors"]}
    assert failed["node1"]["phase"] == "facts" and "systemd" in failed["node1"]["message"]
    assert failed["node2"]["phase"] == "connect"
    assert "would make ca" in err
    assert sorted(p.name for p in half.parent.iterdir()) == before  # no state folder, no PKI


@pytest.mark.parametrize(
    "command",
    [("init",), ("join", "node2"), ("reset", "--yes"), ("certs", "rotate"),
     ("etcd", "snapshot", "save"), ("verify",)],
    ids=" ".join,
)  # fmt: skip
def test_every_command_with_no_host_reachable(none_up: Path, command: tuple[str, ...]) -> None:
    code, doc, _ = run(none_up, *command)
    assert code == 1 and doc["ok"] is False
    failed = by_host(doc)
    assert set(failed) >= {"node1"} and all("refused" in m for m in failed.values())
