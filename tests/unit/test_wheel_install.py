"""The installed overlayctl works, not only the checkout (issue #13).

The wheel is built from the checkout and installed non-editable into a new venv once per session
(tests/installed.py: the `installed_overlayctl` fixture); everything here runs that venv's python
and scripts from outside the checkout without PYTHONPATH. A module, template or command missing
from the wheel fails here. Not marked `lab`, so `make test-unit` runs it; it needs the package
index (through pip and its cache) for the dependencies only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from overlayctl import __version__
from tests.installed import ROOT, Installed

pytestmark = pytest.mark.installed

# Modules that cannot be imported on purpose, with why. overlayctl.__main__ runs the CLI when
# imported (`python -m overlayctl`); test_python_dash_m_overlayctl runs it that way instead.
NOT_IMPORTED = {"overlayctl.__main__": "runs the CLI at import"}

IMPORT_ALL = f"""
import importlib, json, pkgutil, traceback
skip = {sorted(NOT_IMPORTED)!r}
files, failed = {{}}, {{}}
def visit(name):
    files[name] = None
    if name in skip:
        return
    try:
        module = importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
        return
    files[name] = module.__file__
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        visit(info.name)
for top in ("overlayctl", "agent"):
    visit(top)
print(json.dumps({{"files": files, "failed": failed}}))
"""

COMMAND_PATHS = """
import json, click
from overlayctl.cli import main
def walk(command, path):
    yield path
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=" ".join(["overlayctl", *path]))
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), [*path, name])
print(json.dumps(list(walk(main, []))))
"""


def checkout_modules() -> set[str]:
    """Every module of the checkout's overlayctl and agent packages, by dotted name."""
    names = set()
    for top in ("overlayctl", "agent"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_overlayctl_and_agent_import_from_the_venv(installed_overlayctl: Installed) -> None:
    installed_overlayctl.check()  # not from the checkout, whatever the fixture was given


def test_every_module_imports(installed_overlayctl: Installed) -> None:
    proc = installed_overlayctl.run(installed_overlayctl.python, "-c", IMPORT_ALL)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["failed"] == {}, "\n".join(found["failed"].values())
    assert checkout_modules() - set(found["files"]) == set(), "modules missing from the wheel"
    venv = installed_overlayctl.venv.resolve()
    for name, file in found["files"].items():
        assert name in NOT_IMPORTED or Path(file).resolve().is_relative_to(venv), (name, file)


def test_every_command_has_help(installed_overlayctl: Installed) -> None:
    proc = installed_overlayctl.run(installed_overlayctl.python, "-c", COMMAND_PATHS)
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    checkout = subprocess.run([sys.executable, "-c", COMMAND_PATHS], cwd=ROOT, capture_output=True,
                              text=True, check=True)  # fmt: skip
    assert paths == json.loads(checkout.stdout), "the installed CLI has other commands"
    assert len(paths) > 10
    failures = []
    for path in paths:
        result = installed_overlayctl.run(installed_overlayctl.overlayctl, *path, "--help")
        usage = " ".join(["Usage: overlayctl", *path])
        if result.returncode != 0 or usage not in result.stdout:
            failures.append(f"overlayctl {' '.join(path)} --help: exit {result.returncode}\n"
                            f"{result.stdout}{result.stderr}")  # fmt: skip
    assert failures == [], "\n".join(failures)


def test_version(installed_overlayctl: Installed) -> None:
    result = installed_overlayctl.run(installed_overlayctl.overlayctl, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"overlayctl, version {__version__}\n"


def test_python_dash_m_overlayctl(installed_overlayctl: Installed) -> None:
    result = installed_overlayctl.run(installed_overlayctl.python, "-m", "overlayctl", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: " in result.stdout


def test_overlay_agent_help(installed_overlayctl: Installed) -> None:
    result = installed_overlayctl.run(installed_overlayctl.overlay_agent, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: overlay-agent" in result.stdout


def test_render_finds_the_shipped_templates(installed_overlayctl: Installed, tmp_path) -> None:
    golden = ROOT / "tests" / "golden" / "debian-tls"
    out = tmp_path / "out"
    result = installed_overlayctl.run(
        installed_overlayctl.overlayctl, "render", "--out", out, "-i", golden / "cluster.yaml"
    )
    assert result.returncode == 0, result.stderr
    want = {p.relative_to(golden) for p in golden.rglob("*") if p.is_file()}
    got = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert got == want - {Path("cluster.yaml")}
    for path in got:
        assert (out / path).read_bytes() == (golden / path).read_bytes(), path
