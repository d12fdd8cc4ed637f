"""`join`: adding an etcd member to a live cluster, and a failed join that changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from overlayctl.lab import labs, state
from tests.conftest import unique_name
from tests.labtools import cli, main_pids, on

pytestmark = [pytest.mark.lab, pytest.mark.full]


@pytest.fixture(scope="module")
def lab4() -> Iterator[tuple[state.LabState, Path, Path]]:
    name = unique_name("j")
    lab = labs.up(name, 4, "192.168.255.0/24", progress=lambda _m: None)
    doc = yaml.safe_load(lab.inventory.read_text())
    for host in doc["hosts"]:
        host["roles"] = ["etcd", "node"]
    three, four = lab.dir / "three.yaml", lab.dir / "four.yaml"
    three.write_text(yaml.safe_dump({**doc, "hosts": doc["hosts"][:3]}))
    four.write_text(yaml.safe_dump(doc))
    try:
        yield lab, three, four
    finally:
        labs.down(name, progress=lambda _m: None)


def members(lab: state.LabState, inventory: Path) -> list[str]:
    doc = json.loads(cli(lab, "status", "-i", str(inventory), "-o", "json").stdout)
    return sorted(m["name"] for m in doc["etcd"]["members"] if m["healthy"])


def test_join_adds_a_member_or_leaves_the_cluster_as_it_was(lab4) -> None:
    lab, three, four = lab4
    assert cli(lab, "init", "-i", str(three)).returncode == 0
    old = ["node1", "node2", "node3"]
    etcd_before = main_pids(lab, old, ("etcd",))
    # init with node4 listed but not a member: refused with the way out named
    refused = cli(lab, "init", "-i", str(four))
    assert refused.returncode == 1 and "overlayctl join node4" in refused.stderr

    # A join whose new member cannot start: it is removed again, the cluster is untouched.
    on(lab, "node4", "mount --bind /bin/false /usr/bin/etcd")
    failed = cli(lab, "join", "-i", str(four), "node4", "-o", "json")
    assert failed.returncode == 1
    assert "removed again and the cluster is as it was" in failed.stderr
    doc = json.loads(failed.stdout)  # one document, also when the join fails
    assert doc["ok"] is False
    assert any("removed again" in e["message"] for e in doc["errors"]), doc["errors"]
    assert members(lab, three) == ["node1", "node2", "node3"]
    listed = json.loads(cli(lab, "status", "-i", str(three), "-o", "json").stdout)
    assert len(listed["etcd"]["members"]) == 3 and listed["etcd"]["healthy"]

    on(lab, "node4", "umount /usr/bin/etcd")
    joined = cli(lab, "join", "-i", str(four), "node4", "-o", "json")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    doc = json.loads(joined.stdout)
    assert doc["ok"] is True and doc["errors"] == [] and doc["hosts"]["node4"]["changes"] > 0
    assert members(lab, four) == ["node1", "node2", "node3", "node4"]
    # Neither join (the failed one nor this one) restarted etcd on the old members.
    assert main_pids(lab, old, ("etcd",)) == etcd_before
    hosts = on(lab, "node1", "cat /etc/hosts").stdout
    assert f"{lab.host('node4').address} node4" in hosts  # refreshed on the old hosts too
    again = cli(lab, "init", "-i", str(four))
    assert "init: 0 changes on 4 hosts" in again.stdout, again.stdout + again.stderr
