"""init, join and `certs rotate` refuse a cluster built by hand from the runbook before they
write anything, and point to `overlayctl adopt`; `plan` shows what was found (issue 21,
docs/design/adopt.md 2.4 and 2.5).

Before this, `init` on such a cluster rewrote etcd.conf to https while the members' peer URLs
in etcd still said http: the restarted member rejected its peer and etcd never came back. So
the test's point is that NOTHING changes: every file hash, unit state and PID, device, etcd's
member list and v2 keys (tests/e2e/handbuilt.py's snapshot) are the same after each refusal.
The cluster is the runbook's, built by hand on two lab hosts (handbuilt.build: etcd in plain
http with v2, flanneld's stand-in with its v2 leases and TUN, docker's hand edits, containers);
a third, fresh host is the one `join` would add.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import handbuilt
from tests.labtools import cli, full_lab

pytestmark = [pytest.mark.lab, pytest.mark.full]
NAMES = ["node1", "node2"]


def with_node3(inventory: Path, lab_inventory: Path) -> Path:
    """INVENTORY with the lab's node3 added as a node host (what `join node3` would add)."""
    doc = yaml.safe_load(inventory.read_text())
    (node3,) = [h for h in yaml.safe_load(lab_inventory.read_text())["hosts"]
                if h["name"] == "node3"]  # fmt: skip
    doc["hosts"] = [{**h, "roles": ["etcd", "node"]} for h in doc["hosts"]]
    doc["hosts"].append({**node3, "roles": ["node"]})
    path = inventory.with_name("with-node3.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def refused(result, started: float) -> str:  # type: ignore[no-untyped-def]
    """The one error line of a refusal: exit 4, naming adopt and its runbook, in seconds."""
    assert result.returncode == 4, result.stdout + result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("overlayctl: error:")]
    assert len(lines) == 1, result.stderr
    assert "this cluster was built by hand (" in lines[0]
    assert "run 'overlayctl adopt' (docs/runbooks/adopt.md)" in lines[0]
    assert time.monotonic() - started < 30, "a refusal waits for nothing"
    return lines[0]


def test_init_join_and_rotate_refuse_a_hand_built_cluster_and_change_nothing() -> None:
    with full_lab(3, "ar") as lab:
        built = handbuilt.build(lab, NAMES)
        inventory = handbuilt.inventory(lab, NAMES)  # cluster.tls: true, as by default
        before = handbuilt.snapshot(lab, NAMES)

        started = time.monotonic()
        line = tls_line = refused(cli(lab, "init", "-i", str(inventory)), started)
        for sign in (
            "flanneld.service active",
            "etcd.conf not written by overlayctl",
            f"{handbuilt.PREFIX}/config in the v2 API",
            "the same on node2",
        ):
            assert sign in line, line  # fmt: skip
        assert line.startswith("overlayctl: error: node1: ")
        # nothing made here either: no PKI in the state folder
        assert not list((lab.dir / "overlayctl-state").glob("*/pki/ca.crt"))

        plain = handbuilt.inventory(lab, NAMES, path=lab.dir / "plain.yaml", tls=False)
        started = time.monotonic()
        refused(cli(lab, "init", "-i", str(plain)), started)

        joining = with_node3(inventory, lab.inventory)
        started = time.monotonic()
        refused(cli(lab, "join", "-i", str(joining), "node3"), started)
        started = time.monotonic()
        refused(cli(lab, "certs", "rotate", "-i", str(inventory)), started)
        assert handbuilt.snapshot(lab, NAMES) == before

        # plan shows what init refuses on, and changes nothing either
        shown = cli(lab, "plan", "-i", str(inventory))
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout
        assert "=== adoption: init would refuse: node1: this cluster was built by hand" in text
        assert "flanneld.service active enabled" in text
        assert "docker.service requires flanneld.service" in text  # node2's RequiredBy=
        assert "docker drop-in /etc/systemd/system/docker.service.d/override.conf sets " \
               "ExecStart (sorts after ours: it wins)" in text  # fmt: skip
        assert "etcd drop-in /etc/systemd/system/etcd.service.d/override.conf" in text
        for host in built.hosts.values():
            assert f"--- v2: lease {host.subnet} {host.address} ttl " in text, host
            assert f"--- {host.name}: device flannel0 (tun)" in text  # flanneld's own TUN
        doc = json.loads(cli(lab, "plan", "-i", str(inventory), "-o", "json").stdout)
        adoption = doc["adoption"]
        assert adoption["refusal"] == tls_line.removeprefix("overlayctl: error: ")
        assert {x["subnet"]: x["public_ip"] for x in adoption["v2"]["leases"]} == {
            h.subnet: h.address for h in built.hosts.values()
        }
        assert [m["name"] for m in adoption["etcd"]["members"]] == NAMES
        for name, host in built.hosts.items():
            found = adoption["hosts"][name]
            assert found["flanneld"]["state"]["active"] == "active"
            assert {(c["name"], c["ip"]) for c in found["containers"]} == {
                (c.name, c.ip) for c in host.containers.values()
            }
        assert handbuilt.snapshot(lab, NAMES) == before
