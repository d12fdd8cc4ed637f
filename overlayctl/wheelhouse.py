"""The agent's offline wheelhouse: our agent as a wheel plus its dependencies, per host Python.

Hosts need no package index: `init` copies the wheelhouse for the host's Python version and
architecture (from facts) and installs it with `pip --no-index`. Dependency wheels come from the
package index once, on a machine that reaches it (`overlayctl wheelhouse`), and are cached; the
agent's own wheel is built from this installation at every run, without any network.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import agent
from overlayctl.errors import EnvironmentProblem, OverlayctlError

CACHE = Path(os.environ.get("OVERLAYCTL_WHEELHOUSE", "/var/cache/overlayctl/wheelhouse"))
AGENT_DIST = "overlay_agent"
# What the agent imports at run time (distribution names), pinned to this installation's versions
# so hosts run exactly what was tested here.
AGENT_REQUIREMENTS = ("etcd-sdk-python", "protobuf", "grpcio", "pyyaml")
_FIXED_DATE = (2020, 1, 1, 0, 0, 0)  # reproducible zip entries


def pinned_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in AGENT_REQUIREMENTS]


def deps_dir(python: str, arch: str) -> Path:
    """Cache folder for one target, keyed by the pinned requirement set."""
    key = hashlib.sha256("\n".join([*pinned_requirements(), "pip"]).encode()).hexdigest()[:10]
    return CACHE / f"py{python}-{arch}-{key}"


def _complete(target: Path) -> bool:
    """The cache folder holds every wheel its `complete` list names (a folder whose wheels went
    missing is not a cache: hosts would get the agent without its dependencies)."""
    marker = target / "complete"
    if not marker.exists():
        return False
    names = marker.read_text().split()
    return bool(names) and all((target / name).is_file() for name in names)


def download_dependencies(python: str, arch: str, progress=print) -> Path:
    """Fetch binary wheels of the agent's dependencies for CPython PYTHON on ARCH (cached)."""
    target = deps_dir(python, arch)
    if _complete(target):
        return target
    (target / "complete").unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python.replace(".", "")
    platforms = [f"manylinux_2_{m}_{arch}" for m in (17, 28, 31, 34)] + [f"manylinux2014_{arch}"]
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp", "--abi", abi,
            "--abi", "abi3", "--abi", "none", "-d", str(target)]  # fmt: skip
    for platform in platforms:
        argv += ["--platform", platform]
    progress(f"wheelhouse: downloading agent dependencies for Python {python} on {arch}")
    # The versions tested here first; an older Python (RHEL 9's 3.9) may need older releases.
    # pip itself comes along: hosts run it from its wheel in a venv made --without-pip.
    for requirements in ([*pinned_requirements(), "pip"], [*AGENT_REQUIREMENTS, "pip"]):
        for stale in target.glob("*.whl"):
            stale.unlink()
        proc = subprocess.run([*argv, *requirements], capture_output=True, text=True,
                              check=False, timeout=900)  # fmt: skip
        if proc.returncode == 0:
            break
        progress(f"wheelhouse: {' '.join(requirements)} not available for Python {python}")
    else:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise OverlayctlError(f"wheelhouse for Python {python} {arch}: pip download failed: {last}")
    got = sorted(p.name for p in target.glob("*.whl"))
    (target / "complete").write_text("\n".join(got) + "\n")
    return target


def find_dependencies(python: str, arch: str) -> Path:
    """The cached dependency wheels for a host, or one clear line saying how to get them."""
    target = deps_dir(python, arch)
    if not _complete(target):
        raise EnvironmentProblem(
            f"no agent wheelhouse for Python {python} on {arch} in {CACHE}; on a machine that "
            f"reaches the package index run: overlayctl wheelhouse --python {python} --arch {arch}"
        )
    return target


def build_agent_wheel(out_dir: Path) -> Path:
    """Our agent package as a py3-none-any wheel, built from this installation (no network).

    Deterministic: same sources, same bytes (sorted entries, fixed timestamps).
    """
    version = agent.__version__
    dist_info = f"{AGENT_DIST}-{version}.dist-info"
    files: dict[str, bytes] = {}
    root = Path(agent.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        files[f"agent/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    # Names only: the wheelhouse copied next to it decides the versions (pip --no-index).
    requires = "".join(f"Requires-Dist: {r}\n" for r in AGENT_REQUIREMENTS)
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: overlay-agent\nVersion: {version}\n"
        f"Summary: overlay-agent (from overlayctl)\nRequires-Python: >=3.9\n{requires}"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: overlayctl\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\noverlay-agent = agent.main:main\n"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files[f"{dist_info}/RECORD"] = record.getvalue().encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{AGENT_DIST}-{version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, _FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    tmp.replace(wheel)
    return wheel


def digest(paths: list[Path]) -> str:
    """One fingerprint of a set of wheels: what `init` compares to skip a reinstall."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class AgentBundle:
    """The wheels one host installs (agent + dependencies for its Python) and their digest."""

    wheels: tuple[Path, ...]
    digest: str


class Bundles:
    """The agent's bundle per (Python version, architecture), made once per run: the agent's
    wheel is built once, into FOLDER, whatever the number of hosts asking at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str], AgentBundle] = {}
        self._agent_wheel: Path | None = None

    def get(self, python: str, arch: str) -> AgentBundle:
        with self._lock:
            if (python, arch) not in self._made:
                if self._agent_wheel is None:
                    self._agent_wheel = build_agent_wheel(self.folder)
                deps = sorted(find_dependencies(python, arch).glob("*.whl"))
                wheels = (*deps, self._agent_wheel)
                self._made[python, arch] = AgentBundle(wheels, digest(list(wheels)))
            return self._made[python, arch]
