"""Maintenance on the shared cluster, beyond the exit codes test_runbooks checks: `certs rotate`
gives every host new leaf certificates from the same CA, `certs rotate --new-ca` replaces the CA
member by member (quorum kept, docker untouched), also when stopped half-way and run again, and
`etcd snapshot save` / `restore` bring etcd back to the saved state. Each leaves the cluster
healthy (the shared cluster's rule).
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from overlayctl.pki import fingerprint
from tests import installed
from tests.e2e.conftest import Cluster
from tests.e2e.test_runbook import IMAGE, THREE, lease_pairs, same_leases, status
from tests.labtools import ETCDCTL, cli, main_pids, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
# On every member, with ca.crt: its own, and the admin's (CN root, members only).
LEAVES = {"etcd-server.crt", "etcd-peer.crt", "etcd-client.crt", "etcd-admin.crt"}
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


# --- certs rotate --new-ca ------------------------------------------------------------------------

# Every certificate file in the hosts' PKI, each after a `== NAME` line.
PKI_CERTS = 'cd /etc/overlayctl/pki && for f in *.crt; do echo "== $f"; cat "$f"; done'
# systemd's job messages (MESSAGE_ID) for a unit going down and being up again.
STOPPING, STARTED = "de5b426a63be47a7b6ac3eaac82e2f6f", "39f53479d3a045ac8e11786248231fbf"


def pki_certs(cluster: Cluster, host: str) -> dict[str, list[dict[str, str]]]:
    """File under /etc/overlayctl/pki -> its certificates (ca.crt holds two while hosts trust
    both CAs), each {subject, issuer, serial, sha256}, on HOST."""
    result = on(cluster.lab, host, PKI_CERTS)
    assert result.returncode == 0, result.stderr
    found = {}
    for block in result.stdout.split("== ")[1:]:
        name, _, pem = block.partition("\n")
        found[name] = [
            {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
             "serial": str(c.serial_number), "sha256": fingerprint(c.public_bytes(Encoding.PEM))}
            for c in x509.load_pem_x509_certificates(pem.encode())
        ]  # fmt: skip
    assert set(found) == {"ca.crt", *LEAVES}, (host, result.stdout)
    return found


def restarts(cluster: Cluster, host: str, unit: str, since: float) -> list[tuple[float, float]]:
    """(went down, up again) of every restart of UNIT on HOST since SINCE, from its journal:
    systemd's `Stopping` to its `Started` (etcd's and the agent's units are Type=notify, so
    `Started` is when it serves again)."""
    journal = f"journalctl -u {unit} -o json --output-fields=MESSAGE_ID --since @{int(since)}"
    result = on(cluster.lab, host, journal)
    assert result.returncode == 0, result.stderr
    windows, down = [], None
    for entry in map(json.loads, result.stdout.splitlines()):
        at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        if entry.get("MESSAGE_ID") == STOPPING and down is None:
            down = at
        elif entry.get("MESSAGE_ID") == STARTED and down is not None:
            windows.append((down, at))
            down = None
    assert down is None, f"{unit} on {host} went down and is not up again"
    return windows


def one_at_a_time(windows: dict[str, list[tuple[float, float]]]) -> list[tuple[str, float, float]]:
    """Every host's restart windows in time order, asserting none overlaps another host's:
    (host, seconds down, seconds since the previous host's was up again)."""
    ordered = sorted((w, host) for host, ws in windows.items() for w in ws)
    rows, previous_up = [], None
    for (down, up), host in ordered:
        gap = down - previous_up if previous_up is not None else 0.0
        assert gap >= 0, f"{host} went down {-gap:.2f} s before the previous restart ended"
        rows.append((host, round(up - down, 2), round(gap, 2)))
        previous_up = up
    return rows


def replacement_record(cluster: Cluster) -> dict | None:
    cluster_name = yaml.safe_load(cluster.three.read_text())["cluster"]["name"]
    path = cluster.lab.dir / "overlayctl-state" / cluster_name / "pki" / "ca-replacement.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # absent, or being replaced right now
        return None


def assert_new_ca_alone(cluster: Cluster, before: dict, new_ca: str) -> None:
    """Every host trusts NEW_CA alone, and each leaf is new and issued by it."""
    for host in THREE:
        after = pki_certs(cluster, host)
        (ca,) = after["ca.crt"]
        assert ca["sha256"] == new_ca != before[host]["ca.crt"][0]["sha256"], host
        for leaf in LEAVES:
            (cert,) = after[leaf]
            assert cert["issuer"] == ca["subject"] and cert["serial"] != before[host][leaf][0][
                "serial"], (host, leaf, cert)  # fmt: skip
        verified = on(cluster.lab, host, "cd /etc/overlayctl/pki && openssl verify -CAfile ca.crt "
                      + " ".join(sorted(LEAVES)))  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr


def assert_converged(cluster: Cluster) -> None:
    """status exit 0, verify passes, and the next plan has nothing to do."""
    healthy = cli(cluster.lab, "status", "-i", str(cluster.three), "-o", "json")
    assert healthy.returncode == 0, healthy.stdout
    checked = cli(cluster.lab, "verify", "-i", str(cluster.three), "-o", "json", *IMAGE)
    assert checked.returncode == 0 and json.loads(checked.stdout)["ok"], checked.stdout
    _, plan = run(cluster, "plan")
    assert plan["changes"] == 0, plan


def test_certs_rotate_new_ca_replaces_the_ca_member_by_member(shared_cluster: Cluster) -> None:
    before = {host: pki_certs(shared_cluster, host) for host in THREE}
    pids = main_pids(shared_cluster.lab, THREE)
    since = time.time() - 1
    _, doc = run(shared_cluster, "certs", "rotate", "--new-ca")
    ca = doc["ca"]
    assert [r["round"] for r in ca["rounds"]] == [1, 2, 3] and ca["finished"] is True, ca
    assert ca["old"] == before["node1"]["ca.crt"][0]["sha256"] != ca["new"], ca
    assert sorted(doc["hosts"]) == THREE and doc["network_config"] == "unchanged", doc
    assert_new_ca_alone(shared_cluster, before, ca["new"])
    after = main_pids(shared_cluster.lab, THREE)
    assert {h: after[h]["docker"] for h in THREE} == {h: pids[h]["docker"] for h in THREE}
    etcd = {h: restarts(shared_cluster, h, "etcd", since) for h in THREE}
    agents = {h: restarts(shared_cluster, h, "overlay-agent", since) for h in THREE}
    assert all(len(w) == 3 for w in etcd.values()), etcd  # once a round, one member at a time
    assert all(len(w) == 3 for w in agents.values()), agents
    print("etcd restarts (host, s down, s after the previous):", one_at_a_time(etcd))
    print("agent restarts (host, s down, s after the previous):", one_at_a_time(agents))
    print("rounds:", ca["rounds"], "total", doc["seconds"])
    assert_converged(shared_cluster)


def test_a_ca_replacement_stopped_after_round_1_is_finished_by_a_rerun(
    shared_cluster: Cluster,
) -> None:
    """Ctrl-C once round 1 reached every host: status healthy, plan and init accept the hosts'
    bundle meanwhile, and the next run resumes where the record says and finishes."""
    lab, three, _ = shared_cluster
    before = {host: pki_certs(shared_cluster, host) for host in THREE}
    argv = ["ip", "netns", "exec", lab.workstation_netns, str(installed.get().overlayctl),
            "certs", "rotate", "--new-ca", "-i", str(three), "-o", "json"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=installed.clean_env())  # fmt: skip
    try:

        def round_1_done() -> bool:
            at = replacement_record(shared_cluster) or {"round": 0, "done": False}
            assert proc.poll() is None, "the run ended before round 1 was recorded done"
            return at["round"] > 1 or (at["round"] == 1 and at["done"])

        wait_for(round_1_done, 240, "round 1 recorded done", 0.02)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = proc.communicate(timeout=120)
        print(f"Ctrl-C at {replacement_record(shared_cluster)}: exit {proc.returncode} after "
              f"{time.monotonic() - interrupted:.1f} s")  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err)
    assert json.loads(out)["ok"] is False
    stopped_at = replacement_record(shared_cluster)
    assert stopped_at is not None and stopped_at["round"] in (1, 2), stopped_at
    bundles = {h: [c["sha256"] for c in pki_certs(shared_cluster, h)["ca.crt"]] for h in THREE}
    old_ca, new_ca = bundles["node1"]  # round 1 reached every host: both CAs, the old one first
    assert old_ca == before["node1"]["ca.crt"][0]["sha256"] != new_ca, bundles
    assert all(b == [old_ca, new_ca] for b in bundles.values()), bundles
    wait_for(lambda: status(lab, three)["ok"], 60, "status healthy after the stop", 1)
    planned = cli(lab, "plan", "-i", str(three), "-o", "json")
    assert planned.returncode == 0 and "a CA replacement is under way" in planned.stderr, planned
    run(shared_cluster, "init")  # the CA check accepts the bundle; the cluster stays healthy
    assert status(lab, three)["ok"] is True

    _, doc = run(shared_cluster, "certs", "rotate", "--new-ca")
    rounds = [r["round"] for r in doc["ca"]["rounds"]]
    print("the re-run's rounds:", doc["ca"]["rounds"])
    assert rounds == [2, 3] and doc["ca"]["finished"] is True, doc["ca"]
    assert replacement_record(shared_cluster) is None
    assert_new_ca_alone(shared_cluster, before, new_ca)
    assert_converged(shared_cluster)
