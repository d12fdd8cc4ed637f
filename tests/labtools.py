"""Helpers for tests on full lab hosts: a lab for a block, overlayctl from its workstation
namespace, and a command on one of its hosts over SSH."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from overlayctl.lab import labs, state
from tests import installed
from tests.conftest import unique_name

# The installed overlayctl, as users run it (tests/installed.py: the checkout's wheel in its own
# venv, or OVERLAYCTL_INSTALLED_VENV's), so the agent it installs on the hosts is built from the
# installed package too. Its path is known before the venv is: cli() builds it on first use, so a
# module that runs OVERLAYCTL itself does so after a cli() call.
OVERLAYCTL = str(installed.location() / "bin" / "overlayctl")


@contextmanager
def full_lab(hosts: int, prefix: str, subnet: str = "192.168.255.0/24") -> Iterator[state.LabState]:
    """HOSTS booted full hosts for the block; removed afterwards, whatever happened."""
    name = unique_name(prefix)
    lab = labs.up(name, hosts, subnet, progress=lambda _m: None)
    try:
        yield lab
    finally:
        labs.down(name, progress=lambda _m: None)


def cli(lab: state.LabState, *args: str) -> subprocess.CompletedProcess[str]:
    """overlayctl run from the lab's workstation namespace, as an operator would."""
    env = {**installed.clean_env(), "OVERLAYCTL_INVENTORY": str(lab.inventory)}
    argv = ["ip", "netns", "exec", lab.workstation_netns, str(installed.get().overlayctl), *args]
    with _timed("overlayctl", args):
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=300, check=False
        )


def on(lab: state.LabState, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """COMMAND on HOST over SSH from the workstation (strict host keys)."""
    argv = labs.ssh_argv(lab, lab.host(host), command)
    with _timed("on", (host, command)):
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def _timed(kind: str, args: tuple[str, ...]) -> Iterator[None]:
    """With OVERLAYCTL_TEST_TIMINGS=FILE, one JSON line per call (test, kind, args, seconds):
    where the e2e tier's time goes, for the speed work of issue #14. Off by default."""
    path = os.environ.get("OVERLAYCTL_TEST_TIMINGS")
    started = time.monotonic()
    try:
        yield
    finally:
        if path:
            line = {
                "test": os.environ.get("PYTEST_CURRENT_TEST", "?"),
                "kind": kind,
                "args": [a[:80] for a in args],
                "s": round(time.monotonic() - started, 2),
            }
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")


# etcdctl on an etcd member, through that member's own client URL, as etcd's root user: with
# the admin certificate (CN root), which init pushes to etcd members only.
ETCDCTL = (
    "etcdctl --cacert=/etc/overlayctl/pki/ca.crt --cert=/etc/overlayctl/pki/etcd-admin.crt"
    " --key=/etc/overlayctl/pki/etcd-admin.key --endpoints=https://127.0.0.1:2379"
)

# The units a no-change run must not restart.
UNITS = ("etcd", "overlay-agent", "docker")


def main_pids(
    lab: state.LabState, hosts: list[str], units: tuple[str, ...] = UNITS
) -> dict[str, dict[str, str]]:
    """HOST -> UNIT -> its MainPID (`systemctl show -p MainPID --value`); every one running."""
    found: dict[str, dict[str, str]] = {}
    for host in hosts:
        script = "; ".join(f"echo {u} $(systemctl show -p MainPID --value {u})" for u in units)
        result = on(lab, host, script)
        assert result.returncode == 0, (host, result.stderr)
        found[host] = dict(line.partition(" ")[::2] for line in result.stdout.splitlines())
        assert set(found[host]) == set(units), (host, result.stdout)
        assert all(pid not in ("", "0") for pid in found[host].values()), (host, found[host])
    return found
