"""Small helpers shared by the lab benchmarks (scale.py, bootstrap.py).

Bounded waits, killing by PID, SIGTERM turned into KeyboardInterrupt (so every ``finally``
cleans up on Ctrl-C and on ``kill``), percentiles and the goal table both benchmarks print.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

T = TypeVar("T")
# The interpreter `overlayctl init` runs the agent with on a Debian host.
HOST_PYTHON = "/usr/bin/python3"


class Timeout(RuntimeError):
    """A bounded wait ran out."""


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """CHECK's first truthy value, polled every INTERVAL for at most TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise Timeout(f"{what}: not within {timeout} s")


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread (like Ctrl-C) while inside."""

    def handler(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def kill_pid(pid: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal one process we started, by PID; gone already is fine."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def alive(pid: int) -> bool:
    """PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, grace: float = 15.0) -> None:
    """SIGTERM PID, wait (bounded) until it is gone, SIGKILL it if it is not."""
    kill_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        kill_pid(pid)
        end = time.monotonic() + 5
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)


def reap(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Kill PROC (by PID) unless it has exited, and wait for it (bounded)."""
    if proc.poll() is None:
        kill_pid(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def child_pid(pid: int, timeout: float = 10.0) -> int:
    """The single child of PID (nsenter forks the program it runs into the PID namespace)."""
    path = f"/proc/{pid}/task/{pid}/children"

    def first() -> int | None:
        try:
            with open(path) as fh:
                children = fh.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    return wait_for(first, timeout, f"a child of process {pid}", interval=0.01)


def proc_status_kb(pid: int, field: str) -> float:
    """A kB field of /proc/PID/status (VmRSS, RssAnon...)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of PID so far, its waited-for children's included (the
    agent's iptables runs, for one)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = [int(f) for f in fh.read().rsplit(")", 1)[1].split()[11:15]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[2]) / tick, (fields[1] + fields[3]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of PID so far (see :func:`cpu_split`)."""
    return sum(cpu_split(pid))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    """VALUE rounded for the JSON line; None for a missing or NaN figure."""
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def goal_rows(rows: list[tuple[str, float | None, str, float | None]]) -> str:
    """A table of (figure, value, unit, goal as an upper bound or None) with a verdict column."""
    lines = [f"{'figure':<34} {'value':>10} {'unit':<6} {'goal':>8} verdict"]
    for name, value, unit, goal in rows:
        shown = "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
        goal_text = f"<= {goal:g}" if goal is not None else ""
        verdict = ""
        if goal is not None:
            verdict = "n/a" if shown == "n/a" else ("ok" if value <= goal else "MISSED")
        lines.append(f"{name:<34} {shown:>10} {unit:<6} {goal_text:>8} {verdict}")
    return "\n".join(lines)


def host_style_agent(workdir: Path, python: str = HOST_PYTHON) -> str:
    """overlay-agent installed the way `overlayctl init` installs it on a host; its path.

    The host's Python (Debian's, not this checkout's development venv), a venv made
    --without-pip, the agent wheel and its pinned wheelhouse unpacked by the same program
    (overlayctl/remote/scripts/unpack_wheels.py), then byte-compiled, as after its first start.
    """
    from overlayctl.phases.agent import UNPACK_WHEELS  # noqa: PLC0415 - sys.path set first
    from overlayctl.wheelhouse import Bundles  # noqa: PLC0415

    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    wheels = Bundles(workdir / "wheels").get(version, os.uname().machine).wheels
    venv = workdir / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = str(venv / "bin" / "python")
    subprocess.run([venv_python, UNPACK_WHEELS.path, str(venv), *map(str, wheels)], check=True)
    subprocess.run([venv_python, "-m", "compileall", "-q", "-j0", str(venv / "lib")], check=True)
    return str(venv / "bin" / "overlay-agent")
