"""Secrets on two full lab hosts: no private key in any output or log, and keys are private.

One `init` (then a no-change re-run), `plan` (diff and JSON), `status` (table, JSON, -v) are
run from the lab's workstation namespace; everything they print, the run logs under
overlayctl-state/<cluster>/logs/ and the agent's and etcd's journals on the hosts are searched
for the body of every private key overlayctl knows: each *.key of the local PKI and the lab's
SSH client key. File modes of the keys are checked locally and on the hosts.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.labtools import cli, full_lab, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
PEM_BODY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)\n-----END", re.S)


@pytest.fixture(scope="module")
def lab2() -> Iterator[state.LabState]:
    with full_lab(2, "sec") as lab:
        yield lab


@pytest.fixture(scope="module")
def outputs(lab2: state.LabState) -> dict[str, str]:
    """Everything an operator sees or keeps: name -> text."""
    found: dict[str, str] = {}
    for name, args in {
        "init": ("init",),
        "init-again": ("init",),
        "plan": ("plan",),
        "plan-json": ("plan", "-o", "json"),
        "status": ("status",),
        "status-json": ("status", "-o", "json"),
        "status-v": ("status", "-v"),
    }.items():
        result = cli(lab2, *args)
        if name == "init":
            assert result.returncode == 0, result.stdout + result.stderr
        found[f"{name} stdout"] = result.stdout
        found[f"{name} stderr"] = result.stderr
    logs = sorted(state_dir(lab2).glob("logs/*"))
    assert logs, "no run log written"
    for path in logs:
        found[f"log {path.name}"] = path.read_text(errors="replace")
    for host in lab2.hosts:
        journal = on(lab2, host.name, "journalctl --no-pager -u overlay-agent -u etcd -u docker")
        found[f"{host.name} journal"] = journal.stdout
    return found


def state_dir(lab: state.LabState) -> Path:
    (found,) = (lab.dir / "overlayctl-state").iterdir()
    return found


def secrets(lab: state.LabState) -> dict[str, list[str]]:
    """Key file -> the lines of its PEM body (each long enough to be unmistakable)."""
    found: dict[str, list[str]] = {}
    for path in [*sorted((state_dir(lab) / "pki").glob("*.key")), lab.ssh_key]:
        bodies = PEM_BODY.findall(path.read_text())
        assert bodies, f"{path} holds no PEM private key"
        lines = [line for body in bodies for line in body.splitlines() if len(line) >= 16]
        found[str(path)] = lines
    return found


def test_no_private_key_material_in_any_output(lab2: state.LabState, outputs) -> None:
    keys = secrets(lab2)
    assert len(keys) >= 6  # ca, client, 2 x (server, peer), the SSH key
    for where, text in outputs.items():
        assert "PRIVATE KEY" not in text, where
        for path, lines in keys.items():
            leaked = [line for line in lines if line in text]
            assert not leaked, f"{where} shows part of {path}"
        # Key material never travels as one unbroken base64 blob either.
        flat = text.replace("\n", "")
        for path, lines in keys.items():
            assert "".join(lines) not in flat, f"{where} shows {path}"


def test_local_pki_is_private(lab2: state.LabState, outputs) -> None:
    pki = state_dir(lab2) / "pki"
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    keys = sorted(pki.glob("*.key"))
    assert {p.name for p in keys} >= {"ca.key", "client.key", "node1-server.key"}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(lab2.ssh_key.stat().st_mode) == 0o600


def test_keys_on_every_host_are_0600_and_the_ca_key_never_leaves(
    lab2: state.LabState, outputs
) -> None:
    for host in lab2.hosts:
        listing = on(lab2, host.name, "stat -c '%a %n' /etc/overlayctl/pki/*.key").stdout
        lines = sorted(listing.splitlines())
        assert lines and all(line.startswith("600 ") for line in lines), (host.name, lines)
        assert not any("ca.key" in line for line in lines), "the CA key was pushed to a host"
