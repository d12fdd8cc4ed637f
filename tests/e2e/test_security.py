"""Secrets on the shared cluster (node1-3 initialised): no private key in any output or log, and
keys are private.

The cluster's first `init` (kept by the shared fixture), then a no-change re-run, `plan` (diff and
JSON), `status` (table, JSON, -v) run from the lab's workstation namespace; everything they print,
the run logs under overlayctl-state/<cluster>/logs/ and the agent's, etcd's and docker's journals
on the hosts are searched for the body of every private key overlayctl knows: each *.key of the
local PKI (as the first init made them, and as they are now) and the lab's SSH client key. Every
command searched must have exited 0 and printed something: an empty output hides nothing. File
modes of the keys are checked locally and on the hosts.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.e2e.conftest import Cluster, pki_keys
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
PEM_BODY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)\n-----END", re.S)
HOSTS = ["node1", "node2", "node3"]  # the initialised hosts (the `three` inventory)
# Run after the first init, each with `-i three`; all exit 0 on a healthy, converged cluster.
COMMANDS = {
    "init-again": ("init",),
    "plan": ("plan",),
    "plan-json": ("plan", "-o", "json"),
    "status": ("status",),
    "status-json": ("status", "-o", "json"),
    "status-v": ("status", "-v"),
}


@pytest.fixture(scope="module")
def outputs(shared_cluster: Cluster) -> dict[str, str]:
    """Everything an operator sees or keeps: name -> text."""
    lab, three, _ = shared_cluster
    runs: dict[str, subprocess.CompletedProcess[str]] = {"init": shared_cluster.first_init}
    for name, args in COMMANDS.items():
        runs[name] = cli(lab, *args, "-i", str(three))
    for host in lab.hosts:  # node4 too: test_runbook joins it for a while
        journal = "journalctl --no-pager -u overlay-agent -u etcd -u docker"
        runs[f"{host.name} journal"] = on(lab, host.name, journal)
    found: dict[str, str] = {}
    for name, result in runs.items():
        assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stderr}"
        assert result.stdout.strip(), f"{name} printed nothing on stdout\n{result.stderr}"
        found[f"{name} stdout"] = result.stdout
        found[f"{name} stderr"] = result.stderr
    logs = sorted(state_dir(lab).glob("logs/*"))
    assert logs, "no run log written"
    for path in logs:
        found[f"log {path.name}"] = path.read_text(errors="replace")
        assert found[f"log {path.name}"].strip(), f"log {path.name} is empty"
    return found


def state_dir(lab: state.LabState) -> Path:
    (found,) = (lab.dir / "overlayctl-state").iterdir()
    return found


def secrets(cluster: Cluster) -> dict[str, list[str]]:
    """Key -> the lines of its PEM body (each long enough to be unmistakable): the local PKI's
    keys as the first init made them and as they are now (`certs rotate` renews the leaves), and
    the lab's SSH client key."""
    texts = {f"first init's pki/{name}": text for name, text in cluster.first_keys.items()}
    texts |= {f"pki/{name}": text for name, text in pki_keys(cluster.lab).items()}
    texts[str(cluster.lab.ssh_key)] = cluster.lab.ssh_key.read_text()
    found: dict[str, list[str]] = {}
    for name, text in texts.items():
        bodies = PEM_BODY.findall(text)
        assert bodies, f"{name} holds no PEM private key"
        lines = [line for body in bodies for line in body.splitlines() if len(line) >= 16]
        found[name] = lines
    return found


def test_no_private_key_material_in_any_output(shared_cluster: Cluster, outputs) -> None:
    keys = secrets(shared_cluster)
    # ca, client, 3 x (server, peer) as first made and as now, and the SSH key
    assert len(keys) >= 17, sorted(keys)
    for where, text in outputs.items():
        assert "PRIVATE KEY" not in text, where
        for path, lines in keys.items():
            leaked = [line for line in lines if line in text]
            assert not leaked, f"{where} shows part of {path}"
        # Key material never travels as one unbroken base64 blob either.
        flat = text.replace("\n", "")
        for path, lines in keys.items():
            assert "".join(lines) not in flat, f"{where} shows {path}"


def test_local_pki_is_private(shared_cluster: Cluster, outputs) -> None:
    lab = shared_cluster.lab
    pki = state_dir(lab) / "pki"
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    keys = sorted(pki.glob("*.key"))
    assert {p.name for p in keys} >= {"ca.key", "admin.key", "node1-client.key", "node1-server.key"}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(lab.ssh_key.stat().st_mode) == 0o600


def test_keys_on_every_host_are_0600_and_the_ca_key_never_leaves(
    shared_cluster: Cluster, outputs
) -> None:
    for host in HOSTS:
        listing = on(shared_cluster.lab, host, "stat -c '%a %n' /etc/overlayctl/pki/*.key").stdout
        lines = sorted(listing.splitlines())
        assert lines and all(line.startswith("600 ") for line in lines), (host, lines)
        assert not any("ca.key" in line for line in lines), "the CA key was pushed to a host"
