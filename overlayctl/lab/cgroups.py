"""One cgroup per lab host, in every mounted hierarchy (cgroup v1 controllers and v2).

Each systemd-nspawn host is started from its own cgroup directory; otherwise the hosts' systemds
share units and one host's `systemctl stop docker` reaches another. Teardown kills what is left in
the cgroup by PID and removes the directories deepest first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every mounted hierarchy that can hold a process (v1 controllers, named, unified)."""
    if (root / "cgroup.procs").exists():  # pure cgroup v2
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


def create(name: str) -> list[Path]:
    """Create NAME in every hierarchy; cpuset v1 needs its cpus/mems copied from the parent."""
    made = []
    for h in hierarchies():
        path = h / name
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((h / knob).read_text())
        made.append(path)
    return made


def join(name: str) -> None:
    """Move the calling process into NAME everywhere (used in the child before exec)."""
    pid = str(os.getpid())
    for h in hierarchies():
        (h / name / "cgroup.procs").write_text(pid)


def pids(name: str) -> set[int]:
    """Every process in NAME or below it, in any hierarchy."""
    found: set[int] = set()
    for h in hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                found.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return found


def kill_all(name: str, timeout: float = 5.0) -> None:
    """SIGKILL every process left in NAME, by PID, until none is left (bounded in time)."""
    deadline = time.monotonic() + timeout
    while (left := pids(name)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove(name: str) -> list[str]:
    """Remove NAME and its children in every hierarchy, deepest first. Returns what could not go."""
    stuck = []
    for h in hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                _rmdir(path, stuck)
        _rmdir(top, stuck)
    return stuck


def _rmdir(path: Path, stuck: list[str]) -> None:
    for _ in range(20):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    stuck.append(str(path))


def memory_bytes(name: str) -> int | None:
    """Memory charged to NAME (v1 memory controller or v2), or None when not available."""
    for candidate in (
        CGROUP_ROOT / "memory" / name / "memory.usage_in_bytes",
        CGROUP_ROOT / name / "memory.current",
        CGROUP_ROOT / "unified" / name / "memory.current",
    ):
        if candidate.is_file():
            return int(candidate.read_text())
    return None


def cpu_seconds(name: str) -> float | None:
    """CPU time charged to NAME so far (v1 cpuacct, or v2's cpu.stat), or None when not
    available: what the benchmarks use to tell a lab host's own work from the workstation's."""
    v1 = CGROUP_ROOT / "cpuacct" / name / "cpuacct.usage"
    if v1.is_file():
        return int(v1.read_text()) / 1e9
    for stat in (CGROUP_ROOT / name / "cpu.stat", CGROUP_ROOT / "unified" / name / "cpu.stat"):
        if stat.is_file():
            for line in stat.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


def machine_cpu_seconds(stat: Path = Path("/proc/stat")) -> tuple[float, float]:
    """CPU time this machine's CPUs spent busy (user, nice, system, irq, softirq), summed, and
    the time the hypervisor gave them to others (steal): a slow run with much steal was a
    crowded machine."""
    fields = stat.read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick
