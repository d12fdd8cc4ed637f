"""README promises of `overlayctl lab` and `wheelhouse` (issue #14), through the installed CLI:
two labs on one subnet side by side, `lab health` before and after a host powers off, `lab
down`, and `wheelhouse -o json` answering from its cache without any network.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl import wheelhouse
from overlayctl.lab import full, labs, state
from tests import installed
from tests.conftest import unique_name
from tests.e2e.promises import sh
from tests.labtools import cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
SUBNET = "192.168.254.0/24"


def overlayctl(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The installed overlayctl on this machine (lab commands run here, as root), `-o json`."""
    argv = [str(installed.get().overlayctl), *args, "-o", "json"]
    result = subprocess.run(argv, capture_output=True, text=True, env=installed.clean_env(),
                            timeout=300, check=False)  # fmt: skip
    return result, json.loads(result.stdout)


@pytest.fixture(scope="module")
def two() -> Iterator[dict[str, dict]]:
    """Two labs on SUBNET made with `lab up` (2 hosts and 1 host): name -> its JSON document."""
    names = [unique_name("pa"), unique_name("pb")]
    made = {}
    try:
        for name, hosts in zip(names, ("2", "1"), strict=True):
            result, doc = overlayctl("lab", "up", "--name", name, "--hosts", hosts,
                                     "--subnet", SUBNET)  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            made[name] = doc
        yield made
    finally:
        for name in names:
            labs.down(name, progress=lambda _m: None)


def test_two_labs_on_one_subnet_answer_side_by_side(two) -> None:
    (a, doc_a), (b, doc_b) = two.items()
    assert {k: doc_a[k] for k in ("ok", "name", "hosts", "running", "state", "subnet")} == {
        "ok": True, "name": a, "hosts": 2, "running": 2, "state": "running", "subnet": SUBNET,
    }  # fmt: skip
    assert (doc_b["name"], doc_b["hosts"], doc_b["state"], doc_b["subnet"]) == (
        b, 1, "running", SUBNET)  # fmt: skip
    lab_a, lab_b = state.load(a), state.load(b)
    assert lab_a.host("node1").address == lab_b.host("node1").address == "192.168.254.154"
    # The same address, two machines: each lab's own host key, and files of their own.
    sh(lab_a, "node1", f"echo {a} > /etc/which-lab")
    assert sh(lab_a, "node1", "cat /etc/which-lab; hostname") == f"{a}\nnode1\n"
    assert sh(lab_b, "node1", "cat /etc/which-lab 2>/dev/null; hostname") == "node1\n"
    assert lab_a.known_hosts.read_text() != lab_b.known_hosts.read_text()
    result, listed = overlayctl("lab", "list")
    assert result.returncode == 0 and listed["ok"] is True
    ours = {lab["name"]: lab for lab in listed["labs"] if lab["name"] in two}
    assert {n: (lab["running"], lab["state"], lab["subnet"]) for n, lab in ours.items()} == {
        a: (2, "running", SUBNET),
        b: (1, "running", SUBNET),
    }


def test_lab_health_names_a_host_that_is_down(two) -> None:
    name = next(iter(two))
    lab = state.load(name)
    result, doc = overlayctl("lab", "health", "--name", name)
    assert result.returncode == 0 and doc["ok"] is True and doc["errors"] == [], doc
    assert [(h["name"], h["ssh_ok"], h["system_state"]) for h in doc["hosts"]] == [
        ("node1", True, "running"),
        ("node2", True, "running"),
    ]
    # A failed unit: degraded, which health still accepts, naming the unit.
    sh(lab, "node2", "systemd-run --unit=promises-fails /bin/false; sleep 1")
    result, doc = overlayctl("lab", "health", "--name", name)
    assert result.returncode == 0 and doc["ok"] is True, doc
    node2 = doc["hosts"][1]
    assert (node2["system_state"], node2["failed_units"]) == ("degraded", "promises-fails.service")

    on(lab, "node2", "systemctl poweroff")
    wait_for(lambda: not full.is_running(lab.host("node2")), 60, "node2 powered off", 0.5)
    result, doc = overlayctl("lab", "health", "--name", name)
    assert result.returncode == 1 and doc["ok"] is False, doc
    (error,) = doc["errors"]
    assert "node2 (192.168.254.155) did not answer over SSH" in error["message"], error
    result, listed = overlayctl("lab", "list")
    (mine,) = [lab for lab in listed["labs"] if lab["name"] == name]
    assert (mine["running"], mine["state"]) == (1, "partial")


def test_wheelhouse_answers_from_its_cache_without_network(two) -> None:
    """Run in a lab's workstation namespace, which has no way out: a download would fail."""
    lab = state.load(next(iter(two)))
    folder = wheelhouse.deps_dir("3.11", "x86_64")
    cached = sorted(p.name for p in folder.glob("*.whl"))
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = cli(lab, "wheelhouse", "--python", "3.11", "--arch", "x86_64", "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {
        "ok": True, "errors": [], "python": "3.11", "arch": "x86_64", "folder": str(folder),
        "wheels": cached,
    }  # fmt: skip
    assert (folder / "complete").read_text().split() == cached and len(cached) >= 5
    assert "downloading" not in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # nothing written


def test_lab_down_removes_both_labs(two) -> None:
    for name in two:
        result, doc = overlayctl("lab", "down", "--name", name)
        assert result.returncode == 0 and doc == {
            "ok": True, "errors": [], "name": name, "removed": True,
        }, doc  # fmt: skip
    listed = overlayctl("lab", "list")[1]
    assert [lab["name"] for lab in listed["labs"] if lab["name"] in two] == []
    namespaces = subprocess.check_output(["ip", "netns", "list"], text=True)
    assert not any(f"ovl-{name}-" in namespaces for name in two), namespaces
    assert not any(Path(state.lab_dir(name)).exists() for name in two)
