"""The wheels one host installs: the agent's own wheel and the locked dependencies its agent
options need, all checked against the lock before anything leaves this machine."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from overlayctl.wheelhouse.agentwheel import build_agent_wheel
from overlayctl.wheelhouse.cache import find_dependencies, verified
from overlayctl.wheelhouse.lock import extras_for, require_lock


def digest(hashes: dict[str, str]) -> str:
    """One fingerprint of a set of wheels (file name -> sha256): what `init` compares to skip a
    reinstall."""
    h = hashlib.sha256()
    for name in sorted(hashes):
        h.update(name.encode() + b"\0" + bytes.fromhex(hashes[name]))
    return h.hexdigest()


@dataclass(frozen=True)
class AgentBundle:
    """The wheels one host installs, the sha256 each must have (from the lock; the agent's from
    its build) and their digest."""

    wheels: tuple[Path, ...]
    digest: str
    sha256: tuple[tuple[str, str], ...] = ()  # (file name, hex)


class Bundles:
    """The agent's bundle per (Python version, architecture), made once per run for the
    inventory's AGENT_OPTIONS: the agent's wheel is built once, into FOLDER, whatever the number
    of hosts asking at once."""

    def __init__(self, folder: Path, agent_options: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.extras = extras_for(agent_options)
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str], AgentBundle] = {}
        self._agent: tuple[Path, str] | None = None

    def check(self, targets: dict[str, tuple[str, str]]) -> None:
        """Make every host's bundle now (host name -> (python, arch)): a missing lock or a wheel
        that does not match it ends the run here, naming the host or the wheel, before any
        phase changes anything on any host."""
        for name, (python, arch) in sorted(targets.items()):
            self.get(python, arch, who=name)

    def get(self, python: str, arch: str, who: str = "") -> AgentBundle:
        with self._lock:
            if (python, arch) not in self._made:
                lock = require_lock(python, arch, who)
                if self._agent is None:
                    self._agent = build_agent_wheel(self.folder)
                # Every wheel of the host's wheelhouse is checked, sent or not.
                folder = find_dependencies(python, arch)
                verified(lock, folder, lock.wheels)
                deps = [folder / w.file for w in lock.wanted(self.extras)]
                hashes = {w.file: w.sha256 for w in lock.wanted(self.extras)}
                agent_wheel, agent_sha = self._agent
                hashes[agent_wheel.name] = agent_sha
                wheels = (*deps, agent_wheel)
                self._made[python, arch] = AgentBundle(
                    wheels, digest(hashes), tuple(sorted(hashes.items()))
                )
            return self._made[python, arch]
