"""The built wheel is what users install: it must carry the templates and the lab's assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from overlayctl.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"init", "join", "status", "verify", "plan", "render", "reset", "lab"}


def test_group_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {
        line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()
    }
    assert listed >= COMMANDS


def test_wheel_ships_templates_assets_and_both_scripts(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("overlayctl-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    in_repo = {
        p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2")
    }
    shipped = {
        n.removeprefix("overlayctl/templates/")
        for n in names
        if n.startswith("overlayctl/templates/") and n.endswith(".j2")
    }
    assert shipped == in_repo
    assert "overlayctl/lab/assets/lab-cgroup-rw.service" in names
    host_scripts = ROOT / "overlayctl" / "remote" / "scripts"
    for script in host_scripts.glob("*.sh"):  # data files, not modules: named in pyproject.toml
        assert f"overlayctl/remote/scripts/{script.name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "overlayctl = overlayctl.cli:main" in text
    assert "overlay-agent = agent.main:main" in text
