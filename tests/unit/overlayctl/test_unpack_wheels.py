"""The hosts' install (overlayctl/remote/scripts/unpack_wheels.py) checks every wheel against its
RECORD before it unpacks anything: a file changed, added, removed or pointing out of
site-packages stops it with a line naming the wheel and the file, and leaves the venv empty."""

from __future__ import annotations

import io
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from overlayctl.remote.scripts import FOLDER
from overlayctl.wheelhouse import agent_wheel_bytes

UNPACK = FOLDER / "unpack_wheels.py"


def rewritten(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return out.getvalue()


def _edit(files: dict[str, bytes]) -> None:
    files["agent/main.py"] += b"\nimport os; os.system('id')\n"


def _add(files: dict[str, bytes]) -> None:
    files["agent/extra.py"] = b"print('not in RECORD')\n"


def _remove(files: dict[str, bytes]) -> None:
    del files["agent/main.py"]


def _escape(files: dict[str, bytes]) -> None:
    files["../../../../etc/cron.d/x"] = b"* * * * * root id\n"


CASES = {
    "a file changed": (_edit, "agent/main.py does not match its RECORD hash"),
    "a file added": (_add, "agent/extra.py is not in its RECORD"),
    "a file removed": (_remove, "agent/main.py is in its RECORD but not in the wheel"),
    "a path out of site-packages": (_escape, "unsafe or unsupported path"),
}


def install(venv: Path, wheels: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin/python"), str(UNPACK), str(venv), *map(str, wheels)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def site_packages(venv: Path) -> Path:
    version = sysconfig.get_python_version()
    return venv / "lib" / f"python{version}" / "site-packages"


def test_a_wheel_that_matches_its_record_installs(venv: Path, tmp_path: Path) -> None:
    name, data = agent_wheel_bytes()
    (tmp_path / name).write_bytes(data)
    done = install(venv, [tmp_path / name])
    assert done.returncode == 0, done.stderr
    assert (site_packages(venv) / "agent" / "main.py").is_file()
    assert (venv / "bin" / "overlay-agent").is_file()


@pytest.mark.parametrize("case", list(CASES))
def test_a_wheel_that_does_not_match_installs_nothing(venv: Path, tmp_path: Path, case) -> None:
    change, message = CASES[case]
    name, data = agent_wheel_bytes()
    good = tmp_path / "good" / name
    good.parent.mkdir()
    good.write_bytes(data)
    bad = tmp_path / name
    bad.write_bytes(rewritten(data, change))
    done = install(venv, [good, bad])  # the good one first: still nothing unpacked
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"refused: {bad}: "), done.stderr
    assert message in lines[0], done.stderr
    assert not (site_packages(venv) / "agent").exists()
    assert not (venv / "bin" / "overlay-agent").exists()
