"""The wheelhouse cache: the locked wheels of one target in one folder, fetched once with
`pip download --require-hashes` (or taken offline from another folder of the cache holding the
same bytes), and checked against the lock every time they are used.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from overlayctl.errors import EnvironmentProblem, OverlayctlError
from overlayctl.wheelhouse.lock import EXTRAS, Lock, Pinned, cache_root, require_lock

Progress = Callable[[str], object]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deps_dir(python: str, arch: str) -> Path:
    """Cache folder for one target, keyed by its lock (see Lock.key)."""
    lock = require_lock(python, arch)
    return cache_root() / f"py{python}-{arch}-{lock.key}"


def _complete(target: Path) -> bool:
    """The cache folder holds every wheel its `complete` list names (a folder whose wheels went
    missing is not a cache: hosts would get the agent without its dependencies)."""
    marker = target / "complete"
    if not marker.exists():
        return False
    names = marker.read_text().split()
    return bool(names) and all((target / name).is_file() for name in names)


def find_dependencies(python: str, arch: str) -> Path:
    """The cached dependency wheels for a target, or one clear line saying how to get them."""
    target = deps_dir(python, arch)
    if not _complete(target):
        raise EnvironmentProblem(
            f"no agent wheelhouse for Python {python} on {arch} in {cache_root()}; on a machine "
            f"that reaches the package index run: overlayctl wheelhouse --python {python} "
            f"--arch {arch}"
        )
    return target


def verified(lock: Lock, folder: Path, wheels: tuple[Pinned, ...]) -> list[Path]:
    """WHEELS in FOLDER, each checked against the lock's sha256 (not against anything computed
    from the cache itself): a changed byte stops the run before any host is touched."""
    paths = []
    for pinned in wheels:
        path = folder / pinned.file
        if not path.is_file():
            raise EnvironmentProblem(
                f"wheelhouse: {path} is missing; run: overlayctl wheelhouse --python "
                f"{lock.python} --arch {lock.arch}"
            )
        if sha256_of(path) != pinned.sha256:
            raise EnvironmentProblem(
                f"wheelhouse: {path} does not match its sha256 in {lock.describe()} (tampered "
                f"or damaged); nothing was installed. Remove it and run: overlayctl wheelhouse "
                f"--python {lock.python} --arch {lock.arch}"
            )
        paths.append(path)
    return paths


def _pip_download(python: str, arch: str, dest: Path, args: list[str]) -> None:
    abi = "cp" + python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(dest)]  # fmt: skip
    for m in (17, 28, 31, 34):
        argv += ["--platform", f"manylinux_2_{m}_{arch}"]
    argv += ["--platform", f"manylinux2014_{arch}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise OverlayctlError(f"wheelhouse for Python {python} {arch}: pip download failed: {last}")


def _have(pinned: Pinned, folder: Path) -> bool:
    path = folder / pinned.file
    return path.is_file() and sha256_of(path) == pinned.sha256


def _take_from_cache(pinned: Pinned, dest: Path) -> bool:
    """Copy PINNED from another folder of the cache holding the same bytes (no network)."""
    for candidate in sorted(cache_root().glob(f"*/{pinned.file}")):
        if candidate.parent != dest and sha256_of(candidate) == pinned.sha256:
            shutil.copyfile(candidate, dest / pinned.file)
            return True
    return False


def download_dependencies(python: str, arch: str, progress: Progress = print) -> Path:
    """Every wheel of the target's lock in its cache folder, fetched with --require-hashes."""
    lock = require_lock(python, arch)
    target = deps_dir(python, arch)
    if _complete(target):
        verified(lock, target, lock.wheels)
        return target
    (target / "complete").unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    missing = [w for w in lock.wheels if not _have(w, target) and not _take_from_cache(w, target)]
    if missing:
        progress(f"wheelhouse: downloading {len(missing)} pinned wheel(s) for Python {python} "
                 f"on {arch}")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text("".join(
                f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in missing
            ))  # fmt: skip
            _pip_download(python, arch, target,
                          ["--require-hashes", "--no-deps", "-r", str(requirements)])  # fmt: skip
    verified(lock, target, lock.wheels)
    (target / "complete").write_text(
        "".join(f"{name}\n" for name in sorted(w.file for w in lock.wheels))
    )
    return target


def resolve(python: str, arch: str, pinned_here: bool, progress: Progress = print) -> list[Pinned]:
    """Resolve every extra's distributions for the target against the index (the maintainer's
    `wheelhouse lock`, or --unpinned-python): PINNED_HERE asks for the versions installed with
    this overlayctl (what its tests ran) where the target's Python has them, else the newest it
    accepts."""
    found: list[Pinned] = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra, (_option, dists) in sorted(EXTRAS.items()):
            dest = Path(tmp) / extra
            dest.mkdir()
            wanted = [f"{d}=={metadata.version(d)}" if pinned_here else d for d in dists]
            progress(f"wheelhouse: resolving {' '.join(wanted)} for Python {python} on {arch}")
            try:
                _pip_download(python, arch, dest, wanted)
            except OverlayctlError:
                if not pinned_here:
                    raise
                # An older host Python (RHEL 9's 3.9) may need older releases: said here, and
                # visible in the lock's diff the maintainer reviews.
                progress(f"wheelhouse: not all available for Python {python}; resolving the "
                         f"newest {' '.join(dists)} it accepts")  # fmt: skip
                _pip_download(python, arch, dest, list(dists))
            taken = {w.file for w in found}
            for wheel in sorted(dest.glob("*.whl")):
                if wheel.name not in taken:
                    name, version = wheel.name.split("-")[:2]
                    found.append(Pinned(wheel.name, name, version, sha256_of(wheel), extra))
    return found
