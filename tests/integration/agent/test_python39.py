"""The agent on RHEL 9's Python (3.9), installed the way `init` installs it on a host:
a venv, `pip --no-index` from the wheelhouse for that Python (every extra, so that every module
imports), then the console script."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from overlayctl import wheelhouse

pytestmark = pytest.mark.lab


def python39() -> str | None:
    """A real 3.9 interpreter (pyenv's shims are skipped: they may point nowhere)."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"))
    on_path = shutil.which("python3.9")
    if on_path and "/shims/" not in on_path:
        found.append(on_path)
    return found[0] if found else None


def test_agent_installs_and_starts_on_python_3_9(tmp_path: Path) -> None:
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 on this machine")
    # The only skip: anything else (no 3.9 wheelhouse, a build or install error) is a failure,
    # since `make test` builds that wheelhouse and a skip here would hide a broken RHEL 9 path.
    deps = wheelhouse.find_dependencies("3.9", "x86_64")
    agent_wheel, _sha256 = wheelhouse.build_agent_wheel(tmp_path / "wheels")
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links", str(deps),
         "--find-links", str(agent_wheel.parent), "overlay-agent[grpc,yaml]"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    imports = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import pkgutil, importlib, agent\n"
         "for m in pkgutil.walk_packages(agent.__path__, 'agent.'):\n"
         "    importlib.import_module(m.name)\n"
         "print('ok')"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert imports.stdout.strip() == "ok", imports.stderr
    helped = subprocess.run([str(venv / "bin/overlay-agent"), "--help"], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert helped.returncode == 0 and "--etcd-endpoints" in helped.stdout, helped.stderr
