"""The lab template's and the Vagrant box's cache entries are built in a staging folder: whole
(with its `complete` marker) or absent, never half."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overlayctl.lab.template import staged_build


def test_a_finished_build_becomes_the_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry-k1"
    (final / "old").mkdir(parents=True)  # a previous entry (--force) is replaced

    def build(staging: Path) -> None:
        (staging / "rootfs" / "etc").mkdir()

    seconds = staged_build(tmp_path, "k1", final, build)
    assert seconds >= 0 and (final / "rootfs" / "etc").is_dir() and not (final / "old").exists()
    assert json.loads((final / "complete").read_text())["key"] == "k1"
    assert [p.name for p in tmp_path.iterdir()] == ["entry-k1"]


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(staging: Path) -> None:
        (staging / "rootfs" / "half").write_text("x")
        raise RuntimeError("debootstrap died")

    with pytest.raises(RuntimeError):
        staged_build(tmp_path, "k2", tmp_path / "entry-k2", build)
    assert list(tmp_path.iterdir()) == []
