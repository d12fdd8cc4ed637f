"""`reset` of one etcd member cannot stop half-way (issue #16 item 6): when its lease cannot be
deleted, nothing else is removed, and re-running the same reset finishes the job.

Destructive (node3 leaves the cluster), so it has its own lab.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import labs, state
from tests.e2e.conftest import init_or_fail, make_lab
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]

# On node1 (the member reset talks through): etcdctl fails every `del`, as a lost leader
# election or a slow disk makes it fail, and works for everything else.
BREAK_DEL = r"""
set -e
cp /usr/bin/etcdctl /usr/local/sbin/etcdctl.real
cat > /usr/local/sbin/etcdctl.wrapper <<'EOF'
#!/bin/sh
for arg in "$@"; do
  [ "$arg" = del ] && { echo "Error: context deadline exceeded" >&2; exit 1; }
done
exec /usr/local/sbin/etcdctl.real "$@"
EOF
chmod 755 /usr/local/sbin/etcdctl.wrapper
mount --bind /usr/local/sbin/etcdctl.wrapper /usr/bin/etcdctl
"""
MEND_DEL = (
    "umount /usr/bin/etcdctl; rm -f /usr/local/sbin/etcdctl.wrapper /usr/local/sbin/etcdctl.real"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path]]:
    lab, three, _ = make_lab(3, "vxlan", prefix="rr")
    try:
        init_or_fail(lab, three)
        yield lab, three
    finally:
        labs.down(lab.name, progress=lambda _m: None)


def status(lab: state.LabState, inventory: Path) -> dict:
    return json.loads(cli(lab, "status", "-i", str(inventory), "-o", "json").stdout)


def test_a_failed_lease_deletion_keeps_everything_and_a_rerun_finishes(cluster) -> None:
    lab, three = cluster
    node3_ip = str(lab.host("node3").address)
    assert on(lab, "node1", BREAK_DEL).returncode == 0
    try:
        broken = cli(lab, "reset", "-i", str(three), "node3", "-o", "json")
        doc = json.loads(broken.stdout)
        assert broken.returncode == 1 and doc["ok"] is False
        (error,) = doc["errors"]
        assert error["host"] == "node3" and error["phase"] == "lease", error
        assert "re-run the reset" in error["message"]
        assert doc["hosts"]["node3"] == ["agent stopped, data plane removed"]
    finally:
        assert on(lab, "node1", MEND_DEL).returncode == 0
    # Nothing else went: node3 is still a member, its lease, PKI and etcd config are there.
    half = status(lab, three)
    assert sorted(m["name"] for m in half["etcd"]["members"]) == ["node1", "node2", "node3"]
    assert [lease["public_ip"] for lease in half["leases"]].count(node3_ip) == 1
    assert on(lab, "node3", "test -s /etc/etcd/etcd.conf -a -s /etc/overlayctl/pki/ca.crt"
              ).returncode == 0  # fmt: skip

    again = cli(lab, "reset", "-i", str(three), "node3", "-o", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    steps = json.loads(again.stdout)["hosts"]["node3"]
    assert any(s.startswith("lease ") and s.endswith(" deleted") for s in steps), steps
    assert "etcd member removed" in steps and "etcd stopped, data removed" in steps
    assert "etcd user deleted" in steps  # its certificate and password stop working at once
    after = status(lab, three)
    assert sorted(m["name"] for m in after["etcd"]["members"]) == ["node1", "node2"]
    assert node3_ip not in [lease["public_ip"] for lease in after["leases"]]
    assert on(lab, "node3", "test -e /etc/overlayctl/pki/ca.crt").returncode == 1
