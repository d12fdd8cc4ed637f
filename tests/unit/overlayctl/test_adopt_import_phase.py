"""The local side of adopt's v2 phases: where the v2 dump is kept (never overwritten by a
different one: a cut run's first dump holds keys a later one no longer sees), and the lease a
create-if-absent transaction puts a key on (etcdctl reads its ID in hex)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl, v2_remote
from overlayctl.etcd.v2_remote import V2Read
from overlayctl.inventory import parse_inventory
from overlayctl.phases.adopt_import import save_dump
from overlayctl.remote.ssh import RunResult


def test_a_dump_is_saved_once_and_a_different_one_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "adopt"
    first = save_dump(folder, '{"node":1}')
    assert first == folder / "v2-dump.json" and first.read_text() == '{"node":1}'
    assert save_dump(folder, '{"node":1}') == first  # the same again: the same file
    second = save_dump(folder, '{"node":2}')
    assert second == folder / "v2-dump-2.json" and first.read_text() == '{"node":1}'
    assert save_dump(folder, '{"node":3}') == folder / "v2-dump-3.json"
    assert save_dump(folder, '{"node":2}') == second
    assert sorted(p.name for p in folder.iterdir()) == [
        "v2-dump-2.json", "v2-dump-3.json", "v2-dump.json",
    ]  # fmt: skip


def test_a_leased_put_names_its_lease_in_hex() -> None:
    text = etcdctl.txn_stdin(
        "/p/subnets/10.1.2.0-24", '{"PublicIP":"10.0.0.1"}', True, 7231833475202754082
    )
    assert text == (
        'version("/p/subnets/10.1.2.0-24") = "0"\n\n'
        "put --lease=645ca23ad43d2622 /p/subnets/10.1.2.0-24 "
        '"{\\"PublicIP\\":\\"10.0.0.1\\"}"\n\n\n'
    )
    assert "--lease" not in etcdctl.txn_stdin("/k", "v", True)


def test_the_dump_scripts_exit_codes_read_as_states_or_one_error() -> None:
    assert v2_remote.parse_read(RunResult(0, '{"node":{}}', ""), "n1") == V2Read(
        "found", '{"node":{}}'
    )
    assert v2_remote.parse_read(RunResult(3, "{}", ""), "n1").state == "absent"
    assert v2_remote.parse_read(RunResult(4, "", "etcd_v2_dump: off"), "n1") == V2Read("off")
    with pytest.raises(OverlayctlError, match=r"^n1: reading etcd's v2 keys failed: no etcd "):
        v2_remote.parse_read(RunResult(5, "", "etcd_v2_dump: no etcd endpoint answered: x\n"), "n1")
    with pytest.raises(OverlayctlError, match=r"failed: exit 127$"):
        v2_remote.parse_read(RunResult(127, "", ""), "n1")


def test_the_dump_reaches_etcd_as_the_inventory_says() -> None:
    hosts = [{"name": "n1", "address": "10.0.0.1"}, {"name": "n2", "address": "10.0.0.2"}]
    doc = {"cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian",
                       "etcd_prefix": "/atomic.io/network"}, "hosts": hosts}  # fmt: skip
    tls = parse_inventory(doc, Path("/nonexistent"))[0]
    argv, label = v2_remote.dump_command(tls)
    params = json.loads(argv[-1])
    assert argv[:2] == ["python3", "-c"] and label.startswith("python3 -c <etcd_v2_dump> ")
    assert params["endpoints"] == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert params["tls"] == {"ca": hp.CA_CERT, "cert": hp.ETCD_ADMIN_CERT, "key": hp.ETCD_ADMIN_KEY}
    assert (params["mode"], params["prefix"]) == ("dump", "/atomic.io/network")
    doc["cluster"]["tls"] = False
    plain = json.loads(v2_remote.dump_command(parse_inventory(doc, Path("/x"))[0])[0][-1])
    assert plain["tls"] is None and plain["endpoints"][0] == "http://10.0.0.1:2379"
