"""Bootstrap: `overlayctl init` wall time on full lab hosts, fresh and as a no-change re-run.

For each size: `lab up` (not timed; full systemd-nspawn hosts, see overlayctl.lab.labs), then
`overlayctl init` from the lab's workstation namespace as an operator would run it (timed:
every phase, TLS etcd on the first 3 hosts, the agent on every host from the wheelhouse,
docker), then the same `init` again (timed; it must report 0 changes), then `lab down` (always,
also on errors, Ctrl-C and SIGTERM). The wheelhouse is prepared first (`overlayctl wheelhouse`,
cached after the first time).

overlayctl builds the agent's wheel from its own sources at every run, so an edit of agent/ in
the working tree between the fresh run and the re-run would make the re-run reinstall the
agent. The runs therefore use a snapshot of agent/, overlayctl/ and templates/ taken at the
start (PYTHONPATH), removed at the end. Usage (root):

    .venv/bin/python benchmarks/bootstrap.py [--hosts 3,6,10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _lab import ROOT, goal_rows, interrupt_on_sigterm, reap, rounded  # sets sys.path

from overlayctl.lab import labs, state
from tests.conftest import unique_name

OVERLAYCTL = str(Path(sys.executable).parent / "overlayctl")
SUBNET = "192.168.255.0/24"
GOALS = {"init_s": 30.0, "rerun_s": 5.0}  # for 10 hosts
INIT_TIMEOUT = 600.0


SOURCES = ("agent", "overlayctl", "templates")


@contextlib.contextmanager
def source_snapshot() -> Iterator[str]:
    """A frozen copy of overlayctl's and the agent's sources (the PYTHONPATH for the runs)."""
    snapshot = tempfile.mkdtemp(prefix="overlayctl-bootstrap-src-", dir="/var/tmp")
    try:
        for name in SOURCES:
            shutil.copytree(
                Path(ROOT) / name,
                Path(snapshot) / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        yield snapshot
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


class Run:
    """One overlayctl run: wall seconds, exit status, output, and when each stdout line came."""

    pythonpath = ""  # the source snapshot

    def __init__(self, lab: state.LabState, *args: str) -> None:
        env = {**os.environ, "OVERLAYCTL_INVENTORY": str(lab.inventory)}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, *args]
        self.lines: list[tuple[float, str]] = []
        started = time.monotonic()
        proc = subprocess.Popen(  # stderr joins stdout: errors are single lines
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            reader = threading.Thread(target=self._read, args=(proc, started), daemon=True)
            reader.start()
            proc.wait(timeout=INIT_TIMEOUT)
            reader.join(timeout=10)
        finally:
            reap(proc)
        self.seconds = time.monotonic() - started
        self.returncode = proc.returncode
        self.stdout = "".join(line + "\n" for _, line in self.lines)
        self.stderr = ""

    def _read(self, proc: subprocess.Popen, started: float) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append((time.monotonic() - started, line.rstrip("\n")))

    def phases(self) -> str:
        """Phase -> when its last host line came (`node3  agent  5 changes`): where time goes."""
        done: dict[str, float] = {}
        for at, line in self.lines:
            found = re.match(r"^(\S+)\s+(\S+)\s+\S", line)
            if found and not line.startswith("init:"):
                done[found.group(2)] = at
        return ", ".join(f"{phase} {at:.1f}" for phase, at in done.items())

    def changed(self) -> list[str]:
        """The host/phase lines of a run that changed something."""
        return [
            line
            for _, line in self.lines
            if re.search(r"\b[1-9]\d* changes?\b", line) and not line.startswith("init:")
        ]


def summary_line(result: Run) -> str:
    """init's last line (`init: N changes on H hosts in T s; ...`), or the error."""
    found = re.findall(r"^init: .*$", result.stdout, re.M)
    if found:
        return found[-1]
    return (result.stderr.strip() or result.stdout.strip())[-300:]


def failure(result: Run) -> str:
    """The lines of a failed run that say why (failed hosts and errors)."""
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.search(r"fail|error|refused|timed out", line, re.I)
    ]
    return "\n".join(lines[-10:]) or summary_line(result)


def one_size(hosts: int) -> dict:
    """Bring up HOSTS full hosts, time init twice, remove the lab."""
    name = unique_name("b")
    row: dict = {"init_s": None, "rerun_s": None}
    print(f"bootstrap: {hosts} hosts: lab up ({name})", flush=True)
    started = time.monotonic()
    try:
        lab = labs.up(name, hosts, SUBNET, progress=lambda _m: None)
        print(f"bootstrap: {hosts} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        result = Run(lab, "init")
        seconds = result.seconds
        print(f"  init:   {seconds:6.2f} s  exit {result.returncode}  {summary_line(result)}")
        print(f"  phases done at (s): {result.phases()}")
        if result.returncode != 0:
            row["error"] = f"init exited {result.returncode}: {failure(result)}"
            print(row["error"])
            return row
        row["init_s"] = seconds
        result = Run(lab, "init")
        seconds = result.seconds
        print(f"  re-run: {seconds:6.2f} s  exit {result.returncode}  {summary_line(result)}")
        if result.returncode != 0 or not re.search(r"^init: 0 changes", result.stdout, re.M):
            row["error"] = f"re-run was not a no-change run: {summary_line(result)}"
            print("  re-run changed:\n    " + "\n    ".join(result.changed() or [failure(result)]))
        row["rerun_s"] = seconds
        return row
    except subprocess.TimeoutExpired as exc:
        row["error"] = f"overlayctl did not finish within {exc.timeout} s"
        print(row["error"])
        return row
    finally:
        labs.down(name, progress=lambda _m: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="3,6,10", help="comma-separated lab sizes")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.hosts.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--hosts {args.hosts!r}: comma-separated integers")
    if not sizes or not all(1 <= s <= 64 for s in sizes):
        parser.error("--hosts: sizes from 1 to 64")
    if os.geteuid() != 0:
        print("needs root (full lab hosts)", file=sys.stderr)
        return 2
    wheels = subprocess.run(
        [OVERLAYCTL, "wheelhouse"], capture_output=True, text=True, timeout=900, check=False
    )
    if wheels.returncode != 0:
        print(f"bootstrap: `overlayctl wheelhouse` failed: {wheels.stderr.strip()}")
        return 1
    results: dict[str, dict] = {}
    with interrupt_on_sigterm(), source_snapshot() as snapshot:
        Run.pythonpath = snapshot
        try:
            for size in sizes:
                results[str(size)] = one_size(size)
        except KeyboardInterrupt:
            print("bootstrap: interrupted; the lab is removed", file=sys.stderr)
            return 130
    print()
    print(f"{'hosts':>5} {'init s':>8} {'re-run s':>9}  error")
    for size, row in results.items():
        init = "n/a" if row["init_s"] is None else f"{row['init_s']:.2f}"
        rerun = "n/a" if row["rerun_s"] is None else f"{row['rerun_s']:.2f}"
        error = row["error"].splitlines()[0] if row.get("error") else ""
        print(f"{size:>5} {init:>8} {rerun:>9}  {error}")
    if "10" in results:
        print()
        print(goal_rows([
            ("init, 10 hosts, fresh", results["10"]["init_s"], "s", GOALS["init_s"]),
            ("init, 10 hosts, no-change re-run", results["10"]["rerun_s"], "s", GOALS["rerun_s"]),
        ]))  # fmt: skip
    line = {
        size: {"init_s": rounded(row["init_s"], 2), "rerun_s": rounded(row["rerun_s"], 2)}
        | ({"error": row["error"]} if "error" in row else {})
        for size, row in results.items()
    }
    print(json.dumps({"hosts": line}))
    return 0 if all("error" not in row for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
