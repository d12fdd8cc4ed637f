"""adopt's TakeOver helpers without a lab: the v3 leases it reads (etcd/imported.py) and the
host script that moves hand-made files aside and back (takeover-files.sh, run by a local shell
on a temporary tree: a mask's symlink to /dev/null must not swallow a restored unit)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from overlayctl.etcd import imported
from overlayctl.phases.adopt_takeover import interim
from overlayctl.remote.scripts import HostScript
from tests.unit.overlayctl.test_docker_takeover import runbook

FILES = HostScript("takeover-files.sh")


def kvs(prefix: str, items: dict[str, object]) -> list[tuple[str, str, int]]:
    return [(f"{prefix}/{k}", v if isinstance(v, str) else json.dumps(v), 7)
            for k, v in items.items()]  # fmt: skip


def test_imported_leases_by_public_ip() -> None:
    inv = runbook()
    prefix = inv.cluster.etcd_prefix
    got = imported.parse_imported(kvs(prefix, {
        "config": {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}},
        "subnets/172.21.31.0-24": {"PublicIP": "192.168.255.154", "BackendType": "udp"},
        "subnets/172.21.40.0-24": {"PublicIP": "192.168.255.155"},
        "subnets/172.21.41.0-24": {"PublicIP": "192.168.255.155"},  # a second: the first wins
        "subnets/garbage": {"PublicIP": "192.168.255.9"},
        "subnets/172.21.50.0-24": "not json",
        "allowed-public-ips": {"PublicIPs": ["192.168.255.154"]},
    }), inv)  # fmt: skip
    assert got.backend == "udp" and got.config
    assert got.leases == {
        "192.168.255.154": imported.Lease(f"{prefix}/subnets/172.21.31.0-24", "172.21.31.0/24"),
        "192.168.255.155": imported.Lease(f"{prefix}/subnets/172.21.40.0-24", "172.21.40.0/24"),
    }
    bare = imported.parse_imported(kvs(prefix, {"config": {"Network": "172.21.0.0/16"}}), inv)
    assert bare.backend == "vxlan" and bare.leases == {}  # our agents' default
    assert not imported.parse_imported([], inv).config


def test_v2_argv_speaks_v2_to_every_member_as_clients_see_them_during_adoption() -> None:
    argv = imported.v2_argv(interim(runbook()), "get", "/k")
    assert argv == ["env", "ETCDCTL_API=2", "etcdctl",
                    "--endpoints=http://192.168.255.154:2379,http://192.168.255.155:2379",
                    "get", "/k"]  # fmt: skip


def files(mode: str, root: Path, *paths: Path) -> None:
    done = subprocess.run(FILES.argv(mode, str(root), *map(str, paths)), capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_stash_keeps_the_first_original_and_restore_puts_it_back(tmp_path: Path) -> None:
    root = tmp_path / "backup"
    unit = tmp_path / "etc" / "flanneld.service"
    unit.parent.mkdir()
    unit.write_text("hand-written\n")
    files("stash", root, unit)
    assert not unit.exists() and (root / str(unit).lstrip("/")).read_text() == "hand-written\n"
    unit.write_text("later\n")
    files("stash", root, unit)  # an earlier backup stays the original
    assert (root / str(unit).lstrip("/")).read_text() == "hand-written\n"
    assert not unit.exists()
    unit.symlink_to("/dev/null")  # what `systemctl mask` leaves there
    files("restore", root, unit)
    assert not unit.is_symlink() and unit.read_text() == "hand-written\n"


def test_restore_removes_what_did_not_exist_and_leaves_unknown_paths(tmp_path: Path) -> None:
    root = tmp_path / "backup"
    made = tmp_path / "dropin.conf"
    made.write_text("ours\n")
    marker = root / (str(made).lstrip("/") + ".absent")  # put-file.sh's: it was not there
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    other = tmp_path / "other.conf"
    other.write_text("untouched\n")
    files("restore", root, made, other)
    assert not made.exists() and other.read_text() == "untouched\n"
    files("stash", root, tmp_path / "missing.conf")  # nothing there: nothing kept
    assert not (root / (str(tmp_path / "missing.conf").lstrip("/"))).exists()
