"""The lock: every dependency wheel the agent may get on one host target (CPython version and
architecture), with its sha256, committed in overlayctl/wheelhouse/locks/ and shipped inside
overlayctl's wheel, so what hosts install is what was reviewed, not whatever the index or a
cache holds today.

Each wheel belongs to one extra, which only hosts whose agent options ask for it get (EXTRAS):
the gRPC stack (about 7.8 MB) only with --etcd-transport=grpc, PyYAML only with --config-file.

A target without a shipped lock (another host Python) gets one only on request: `overlayctl
wheelhouse --unpinned-python` resolves it once and writes it beside the cache (LOCAL_LOCKS); it is
used from then on, and says it was resolved there (trust on first use).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from overlayctl.errors import BadInput, EnvironmentProblem

PACKAGED = Path(__file__).resolve().parent / "locks"
DEFAULT_CACHE = "/var/cache/overlayctl/wheelhouse"
# extra -> ((the agent option that needs it, its value or None for any), the distributions)
EXTRAS: dict[str, tuple[tuple[str, str | None], tuple[str, ...]]] = {
    "grpc": (("--etcd-transport", "grpc"), ("etcd-sdk-python", "protobuf", "grpcio")),
    "yaml": (("--config-file", None), ("pyyaml",)),
}


def cache_root() -> Path:
    """The wheelhouse cache (OVERLAYCTL_WHEELHOUSE overrides it, e.g. for tests)."""
    return Path(os.environ.get("OVERLAYCTL_WHEELHOUSE", DEFAULT_CACHE))


def local_locks() -> Path:
    """Where --unpinned-python writes the locks it resolves: beside the cache."""
    return cache_root() / "locks"


def lock_name(python: str, arch: str) -> str:
    return f"cp{python.replace('.', '')}-{arch}.json"


def extras_for(agent_options: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The extras the agent needs with these options (the inventory's agent_options)."""
    given = {}
    for option in agent_options:
        flag, _, value = option.partition("=")
        given[flag.replace("_", "-")] = value
    return frozenset(
        extra
        for extra, ((flag, value), _dists) in EXTRAS.items()
        if flag in given and value in (None, given[flag])
    )


@dataclass(frozen=True)
class Pinned:
    """One wheel of the lock."""

    file: str
    name: str
    version: str
    sha256: str
    extra: str


@dataclass(frozen=True)
class Lock:
    python: str
    arch: str
    wheels: tuple[Pinned, ...]
    source: Path  # the file it was read from
    shipped: bool  # inside overlayctl (reviewed), or resolved here with --unpinned-python

    @property
    def key(self) -> str:
        """Names the cache folder: a new lock never finds an old lock's wheels by accident."""
        h = hashlib.sha256()
        for w in sorted(self.wheels, key=lambda w: w.file):
            h.update(f"{w.file} {w.sha256}\n".encode())
        return h.hexdigest()[:10]

    def wanted(self, extras: frozenset[str]) -> tuple[Pinned, ...]:
        return tuple(w for w in self.wheels if w.extra in extras)

    def describe(self) -> str:
        return str(self.source) if self.shipped else f"{self.source} (resolved here)"


def to_json(python: str, arch: str, wheels: list[Pinned]) -> str:
    doc = {
        "about": "the agent's dependency wheels for this host target, pinned by sha256; "
        "made by `overlayctl wheelhouse lock` (README: The agent's supply chain), never by hand",
        "python": python,
        "arch": arch,
        "wheels": [
            {"file": w.file, "name": w.name, "version": w.version, "sha256": w.sha256,
             "extra": w.extra}
            for w in sorted(wheels, key=lambda w: (w.extra, w.file))
        ],
    }  # fmt: skip
    return json.dumps(doc, indent=1) + "\n"


def read_lock(path: Path, shipped: bool) -> Lock:
    """A lock file, checked: one clear line naming the file and the field if it is wrong."""
    try:
        doc = json.loads(path.read_text())
        wheels = tuple(
            Pinned(str(w["file"]), str(w["name"]), str(w["version"]), str(w["sha256"]),
                   str(w["extra"]))
            for w in doc["wheels"]
        )  # fmt: skip
        python, arch = str(doc["python"]), str(doc["arch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: not a wheel lock ({type(exc).__name__}: {exc})") from None
    for w in wheels:
        if len(w.sha256) != 64 or w.extra not in EXTRAS or "/" in w.file:
            raise BadInput(f"{path}: wheel {w.file!r}: bad sha256, extra or file name")
    return Lock(python, arch, wheels, path, shipped)


def find_lock(python: str, arch: str) -> Lock | None:
    """The shipped lock for the target, else one --unpinned-python wrote beside the cache."""
    for folder, shipped in ((PACKAGED, True), (local_locks(), False)):
        path = folder / lock_name(python, arch)
        if path.is_file():
            return read_lock(path, shipped)
    return None


def shipped_targets() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.json"))


def require_lock(python: str, arch: str, who: str = "") -> Lock:
    """The lock for the target, or one clear line saying how to get one (never a silent
    fallback to unpinned versions)."""
    found = find_lock(python, arch)
    if found is None:
        head = f"{who}: " if who else ""
        raise EnvironmentProblem(
            f"{head}no pinned lock of the agent's wheels for CPython {python} on {arch} "
            f"(overlayctl ships {', '.join(shipped_targets())}); to resolve and pin the newest "
            f"compatible versions once, on a machine that reaches the package index, run: "
            f"overlayctl wheelhouse --python {python} --arch {arch} --unpinned-python"
        )
    return found
