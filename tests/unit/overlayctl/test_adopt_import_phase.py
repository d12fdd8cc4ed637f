"""The local side of adopt's v2 phases: where the v2 dump is kept (never overwritten by a
different one: a cut run's first dump holds keys a later one no longer sees), and the lease a
create-if-absent transaction puts a key on (etcdctl reads its ID in hex)."""

from __future__ import annotations

from pathlib import Path

from overlayctl.etcd import etcdctl
from overlayctl.phases.adopt_import import save_dump


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
