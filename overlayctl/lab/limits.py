"""Kernel limits a lab of N full hosts needs, raised by the lab itself before it boots them.

Every nspawn host runs as this machine's root (no user namespace), so the inotify instances of
all hosts' systemd, journald, dbus, docker and containerd count against root's one
`fs.inotify.max_user_instances`. Debian's default is 128: a 25-host lab (measured here: 7
instances per host once booted, 9 once `init` has run, more for a moment while systemd starts
its units) ran out, and the last hosts' systemd never reached SSH
(`node22 ... did not answer over SSH`). The lab computes what N hosts need, raises only what is
below it (never lowers a value an operator chose) and says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_SYS = Path("/proc/sys")

# Per host: twice what a host holds after `init` (9 instances, 32 watches measured), so boot
# transients, `systemctl --wait`, verify's containers and a second lab fit.
INSTANCES_PER_HOST = 16
WATCHES_PER_HOST = 1024
# What this machine itself uses, on top of the hosts: the kernel's own defaults.
INSTANCES_BASE = 128
WATCHES_BASE = 8192


@dataclass(frozen=True)
class Raise:
    """One sysctl to raise: from its current value to the one the lab needs."""

    key: str  # as sysctl names it: fs.inotify.max_user_instances
    current: int
    wanted: int


def needed(hosts: int) -> dict[str, int]:
    """The sysctl values a lab of HOSTS full hosts needs (lower bounds)."""
    return {
        "fs.inotify.max_user_instances": INSTANCES_BASE + INSTANCES_PER_HOST * hosts,
        "fs.inotify.max_user_watches": WATCHES_BASE + WATCHES_PER_HOST * hosts,
    }


def raises(hosts: int, current: dict[str, int]) -> list[Raise]:
    """The sysctls of CURRENT below what HOSTS hosts need: only raised, never lowered."""
    return [
        Raise(key, current[key], wanted)
        for key, wanted in needed(hosts).items()
        if current[key] < wanted
    ]


def describe(hosts: int, done: list[Raise]) -> str:
    """One line saying what was raised and why."""
    changes = ", ".join(f"{r.key} {r.current} -> {r.wanted}" for r in done)
    return (
        f"lab: raised {changes} for {hosts} hosts "
        "(every host's systemd, docker and containerd take inotify instances as root)"
    )


def _path(key: str, root: Path) -> Path:
    return root / key.replace(".", "/")


def read(root: Path = PROC_SYS) -> dict[str, int]:
    """The current values of the sysctls :func:`needed` names."""
    return {key: int(_path(key, root).read_text().split()[0]) for key in needed(1)}


def ensure(hosts: int, root: Path = PROC_SYS) -> str | None:
    """Raise what HOSTS hosts need; the line saying so, or None when nothing was below it."""
    todo = raises(hosts, read(root))
    for item in todo:
        _path(item.key, root).write_text(f"{item.wanted}\n")
    return describe(hosts, todo) if todo else None
