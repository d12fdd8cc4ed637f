"""Maintenance on the shared cluster, beyond the exit codes test_runbooks checks: `certs rotate`
gives every host new leaf certificates from the same CA, and `etcd snapshot save` / `restore`
bring etcd back to the saved state. Both leave the cluster healthy (the shared cluster's rule).
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.test_runbook import THREE, lease_pairs, same_leases, status
from tests.labtools import ETCDCTL, cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
LEAVES = {"etcd-server.crt", "etcd-peer.crt", "etcd-client.crt"}  # on every member, with ca.crt
SERIALS = (
    "cd /etc/overlayctl/pki && for f in *.crt; do echo $f $(openssl x509 -serial -noout -in $f); "
    "done"
)


def run(cluster: Cluster, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """overlayctl ARGS on the cluster with `-o json`; the result and its one document."""
    result = cli(cluster.lab, *args, "-i", str(cluster.three), "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["errors"] == [], doc
    return result, doc


def serials(cluster: Cluster, host: str) -> dict[str, str]:
    """Certificate file under /etc/overlayctl/pki -> its serial, on HOST."""
    result = on(cluster.lab, host, SERIALS)
    assert result.returncode == 0, result.stderr
    found = dict(line.partition(" ")[::2] for line in result.stdout.splitlines())
    assert set(found) == {"ca.crt", *LEAVES}, (host, result.stdout)
    assert all(s.startswith("serial=") and len(s) > len("serial=") for s in found.values()), found
    return found


def etcd_get(cluster: Cluster, host: str, key: str) -> str:
    result = on(cluster.lab, host, f"{ETCDCTL} get {key} --print-value-only")
    assert result.returncode == 0, (host, result.stderr)
    return result.stdout.strip()


def test_certs_rotate_renews_every_leaf_certificate_and_keeps_the_ca(
    shared_cluster: Cluster,
) -> None:
    before = {host: serials(shared_cluster, host) for host in THREE}
    _, doc = run(shared_cluster, "certs", "rotate")
    assert {"changes", "hosts", "network_config", "seconds", "log"} <= set(doc), doc
    assert sorted(doc["hosts"]) == THREE and doc["network_config"] == "unchanged", doc
    assert all(doc["hosts"][h]["changes"] > 0 for h in THREE) and doc["changes"] > 0, doc
    after = {host: serials(shared_cluster, host) for host in THREE}
    for host in THREE:
        assert after[host]["ca.crt"] == before[host]["ca.crt"], host
        renewed = {c for c in LEAVES if after[host][c] != before[host][c]}
        assert renewed == LEAVES, (host, before[host], after[host])
    # every member serves and uses the new certificates: the cluster is healthy
    assert status(shared_cluster.lab, shared_cluster.three)["ok"] is True


def test_snapshot_restore_brings_etcd_back_to_the_saved_state(
    shared_cluster: Cluster, tmp_path: Path
) -> None:
    lab, three, _ = shared_cluster
    before = lease_pairs(status(lab, three))
    assert [host for host, _ in before] == THREE
    snap = tmp_path / "backup" / "etcd.db"
    _, saved = run(shared_cluster, "etcd", "snapshot", "save", "--out", str(snap))
    assert saved["file"] == str(snap) and saved["bytes"] == snap.stat().st_size > 0, saved
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600

    key = "/overlayctl-test/written-after-the-snapshot"
    assert on(lab, "node1", f"{ETCDCTL} put {key} yes").returncode == 0
    assert etcd_get(shared_cluster, "node2", key) == "yes"

    _, restored = run(shared_cluster, "etcd", "snapshot", "restore", str(snap), "--yes")
    assert restored["snapshot"] == str(snap) and restored["members"] == THREE, restored
    for host in THREE:  # every member has the snapshot's data: the key written after is gone
        assert etcd_get(shared_cluster, host, key) == "", host
        assert json.loads(etcd_get(shared_cluster, host, "/coreos.com/network/config"))
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    wait_for(lambda: status(lab, three)["ok"], 60, "a healthy cluster after the restore", 1)
    same_leases(lease_pairs(status(lab, three)), before)
