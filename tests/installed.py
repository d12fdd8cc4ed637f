"""overlayctl installed the way users install it: the checkout's wheel, non-editable, in a new venv.

Every other test imports the checkout (an editable install, or the rootdir on sys.path), so a file
the wheel leaves out goes unnoticed: issue #13, where `overlayctl --help` of a `pip install .` died
on a missing `overlayctl.remote`. This module builds that installation once per process, for
tests/unit/test_wheel_install.py and for the e2e tier's `cli()` (tests/labtools.py), so the lab
runs the installed CLI too, including the agent wheel it builds from its own files.

Set OVERLAYCTL_INSTALLED_VENV to a venv made by `python -m tests.installed DEST` to reuse it
instead of building one (e.g. across several pytest runs on one checkout).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "OVERLAYCTL_INSTALLED_VENV"
# What a copy of the checkout leaves out: build outputs (a stale build/lib would put deleted
# modules into the wheel), environments and caches. The rest is what `pip install .` sees.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache",
    ".ruff_cache", ".lab", ".vagrant", "out",
)  # fmt: skip


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """_NOT_SOURCES, and a wheelhouse/ folder at the top only (overlayctl/wheelhouse is code)."""
    top = {"wheelhouse"} & set(names) if Path(folder) == ROOT else set()
    return set(_NOT_SOURCES(folder, names)) | top


# Where this process builds its venv when the variable is unset. Known before it exists, so that
# tests/labtools.py can export the path as a constant; random, so no one can plant it beforehand.
_OWN = Path(tempfile.gettempdir()) / f"overlayctl-installed-{os.getpid()}-{secrets.token_hex(4)}"
# The one installation of this process, or the error that building it raised.
_ONCE: list[Installed | BaseException] = []


@dataclass(frozen=True)
class Installed:
    """A venv holding the installed overlayctl; `run` keeps the checkout off its sys.path."""

    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def overlayctl(self) -> Path:
        return self.bin / "overlayctl"

    @property
    def overlay_agent(self) -> Path:
        return self.bin / "overlay-agent"

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """ARGV (a script of this venv, or its python) from outside the checkout, clean env.

        The cwd matters for `python -c`, which puts it first on sys.path.
        """
        return subprocess.run(
            [str(a) for a in argv], cwd=self.venv, env=clean_env(), capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def check(self) -> None:
        """Fail unless overlayctl and agent import from this venv, not from the checkout."""
        code = "import agent, overlayctl; print(overlayctl.__file__); print(agent.__file__)"
        proc = self.run(self.python, "-c", code)
        assert proc.returncode == 0, f"the installed overlayctl does not import:\n{proc.stderr}"
        venv = self.venv.resolve()
        for path in proc.stdout.split():
            where = Path(path).resolve()
            assert where.is_relative_to(venv), f"{where} is imported from outside {venv}"
            assert not where.is_relative_to(ROOT), f"{where} is imported from the checkout"


def clean_env() -> dict[str, str]:
    """This process's environment without what could put the checkout on sys.path."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


def location() -> Path:
    """The venv's path, whether or not it exists yet."""
    given = os.environ.get(ENV_VAR)
    return Path(given).resolve() if given else _OWN / "venv"


def build(dest: Path, source: Path = ROOT) -> Installed:
    """Build the wheel of SOURCE and install it non-editable into a new venv DEST/venv.

    The dependencies are pinned to this process's (the checkout venv's `pip freeze`): the e2e tier
    then finds the agent wheelhouse cache, which is keyed by those versions, without downloading.
    """
    dest.mkdir(mode=0o700, parents=True)
    tree, dist, venv = dest / "src", dest / "dist", dest / "venv"
    shutil.copytree(source, tree, ignore=_not_sources, symlinks=True)
    quiet = ["-q", "--disable-pip-version-check"]
    _run(sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "-w", dist, tree, cwd=dest)
    (wheel,) = dist.glob("overlayctl-*.whl")
    freeze = _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--exclude",
                  "overlayctl", cwd=dest)  # fmt: skip
    pins = [line for line in freeze.splitlines() if line and not line.startswith(("#", "-e"))]
    (dest / "constraints.txt").write_text("\n".join(pins) + "\n")
    _run(sys.executable, "-m", "venv", venv, cwd=dest)
    installed = Installed(venv)
    _run(installed.python, "-m", "pip", "install", *quiet, "-c", dest / "constraints.txt", wheel,
         cwd=dest)  # fmt: skip
    shutil.rmtree(tree)
    installed.check()
    return installed


def get() -> Installed:
    """The installation for this process: the one OVERLAYCTL_INSTALLED_VENV names, or one built
    once at location() and removed at exit. A failure is kept too, so that the e2e tier's many
    `cli()` calls do not each try the build again."""
    if not _ONCE:
        try:
            if os.environ.get(ENV_VAR):
                Installed(location()).check()
                _ONCE.append(Installed(location()))
            else:
                atexit.register(shutil.rmtree, _OWN, ignore_errors=True)
                _ONCE.append(build(_OWN))
        except Exception as exc:  # kept and raised again below, at every call
            _ONCE.append(exc)
    if isinstance(_ONCE[0], BaseException):
        raise _ONCE[0]
    return _ONCE[0]


def _run(*argv: str | Path, cwd: Path) -> str:
    """ARGV with a clean env (no PYTHONPATH); its stdout, or an error carrying its stderr."""
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


if __name__ == "__main__":
    # python -m tests.installed DEST: build once, then export OVERLAYCTL_INSTALLED_VENV=DEST/venv.
    made = build(Path(sys.argv[1]).resolve())
    print(made.venv)
