"""Pure parts of the Vagrant box builder (overlayctl/lab/box.py); the box itself boots in the
`vm` tier (tests/vm/test_vagrant_page.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from overlayctl.errors import EnvironmentProblem, OverlayctlError
from overlayctl.lab import box
from overlayctl.phases.packages import PACKAGES as INIT_INSTALLS

KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 vagrant insecure public key\n"


def test_the_box_carries_everything_init_installs_on_debian() -> None:
    """The VMs reach no mirror: a package init finds missing could never be installed."""
    wanted = {p for role in INIT_INSTALLS["debian"].values() for p in role}
    assert wanted <= set(box.INIT_PACKAGES), wanted - set(box.INIT_PACKAGES)
    assert set(box.INIT_PACKAGES) <= set(box.PACKAGES)


def test_cache_key_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    first = box.cache_key(KEY)
    assert first == box.cache_key(KEY)  # stable: a warm cache is found again
    assert box.cache_key(KEY.replace("C7", "C8")) != first  # Vagrant's key changed
    monkeypatch.setattr(box, "PACKAGES", (*box.PACKAGES, "vim-tiny"))
    assert box.cache_key(KEY) != first
    monkeypatch.undo()
    monkeypatch.setattr(box, "CUSTOMISATION_VERSION", box.CUSTOMISATION_VERSION + 1)
    assert box.cache_key(KEY) != first


def test_a_box_is_found_only_when_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(box, "CACHE_ROOT", tmp_path)
    key = box.cache_key(KEY)
    box.box_dir(key).mkdir()
    assert box.find_box(key) is None  # a build that died half way
    (box.box_dir(key) / "complete").write_text(json.dumps({"key": key, "build_seconds": 151.5}))
    found = box.find_box(key)
    assert found is not None and found.name == f"overlayctl-bookworm-{key}"
    assert found.file == tmp_path / f"box-{key}" / "bookworm.box" and found.build_seconds == 151.5


def test_boot_code_keeps_the_partition_table(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    table = os.urandom(64) + b"\x55\xaa"
    raw.write_bytes(b"\0" * 446 + table + b"\0" * (box.PARTITION_START * 512 - 512))
    boot, core = os.urandom(512), os.urandom(40_000)
    box.write_boot_code(raw, boot, core)
    data = raw.read_bytes()
    assert data[:440] == boot[:440]  # the MBR's code
    assert data[446:512] == table  # partitions and signature untouched
    assert data[512 : 512 + len(core)] == core  # core.img from sector 1 on
    assert len(data) == box.PARTITION_START * 512


@pytest.mark.parametrize(
    ("boot_size", "core_size", "message"),
    [(400, 100, "not one sector"), (512, box.PARTITION_START * 512, "does not fit")],
)
def test_boot_code_that_cannot_fit_is_refused(
    tmp_path: Path, boot_size: int, core_size: int, message: str
) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * box.PARTITION_START * 512)
    with pytest.raises(OverlayctlError, match=message):
        box.write_boot_code(raw, b"\0" * boot_size, b"\0" * core_size)


def test_grub_boots_the_root_filesystem_by_uuid() -> None:
    cfg = box.grub_config("0b5e2a1c-3d4f-5a6b-8c7d-9e0f1a2b3c4d")
    assert "search --no-floppy --fs-uuid --set=root 0b5e2a1c-3d4f-5a6b-8c7d-9e0f1a2b3c4d" in cfg
    assert "linux /vmlinuz root=UUID=0b5e2a1c-3d4f-5a6b-8c7d-9e0f1a2b3c4d ro" in cfg
    assert "console=ttyS0" in cfg and "initrd /initrd.img" in cfg
    assert "apparmor=0" not in cfg  # AppArmor is in the image, as on a stock Debian host


def test_metadata_is_vagrant_libvirt_s_format() -> None:
    assert box.metadata() == {"provider": "libvirt", "format": "qcow2", "virtual_size": 6}


def test_vagrant_s_key_is_read_from_the_installed_vagrant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(box.glob, "glob", lambda _pattern: [])
    with pytest.raises(EnvironmentProblem, match="insecure public key"):
        box.vagrant_public_key()
