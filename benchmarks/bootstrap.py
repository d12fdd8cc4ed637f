"""Bootstrap: `overlayctl init` (fresh and as a re-run), `verify` and `status` on full lab hosts.

For each size: `lab up` (not timed; full systemd-nspawn hosts, see overlayctl.lab.labs; it
raises the inotify limits the hosts need), then `overlayctl init -o json` from the lab's
workstation namespace as an operator would run it (timed: every phase, TLS etcd on the first 3
hosts, the agent on every host from the wheelhouse, docker; its `phases_s` says where the time
went), then the same `init` again (timed; it must report 0 changes), then `verify` (timed: all
N*N pairs, each also with Don't-Fragment at the MTU; the lab's busybox image imported on first
use), then `status` (timed; it must be healthy), then `lab down` (always, also on errors,
Ctrl-C and SIGTERM). The wheelhouse is prepared first (`overlayctl wheelhouse`, cached after
the first time).

Every timed run also says what CPU it cost (`cpu_s`): the lab hosts' own (their cgroups), the
rest of this machine's (overlayctl, the kernel, anything else) and the floor they set: all of it
over every core. Here every host shares this machine's cores; on real hosts their part runs on
their own CPUs, so a figure near its floor is bound by this machine, not by overlayctl's waits.

overlayctl builds the agent's wheel from its own sources at every run, so an edit of agent/ in
the working tree between the fresh run and the re-run would make the re-run reinstall the
agent. The runs therefore use a snapshot of agent/, overlayctl/ and templates/ taken at the
start (PYTHONPATH), removed at the end; `--agent-rev REV` takes agent/ from a git revision
instead (e.g. HEAD, while someone edits the agent). Usage (root):

    .venv/bin/python benchmarks/bootstrap.py [--hosts 3,10,25] [--agent-rev HEAD]
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
import time
from collections.abc import Iterator
from pathlib import Path

from _lab import ROOT, goal_rows, interrupt_on_sigterm, reap, rounded  # sets sys.path

from overlayctl.lab import cgroups, labs, state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.conftest import unique_name

OVERLAYCTL = str(Path(sys.executable).parent / "overlayctl")
SUBNET = "192.168.255.0/24"
# Goals (issue 20), per lab size: fresh init; re-run and verify where the issue sets one.
GOALS: dict[str, dict[str, float]] = {
    "3": {"init_s": 6.0},
    "10": {"init_s": 10.0},
    "25": {"init_s": 20.0, "rerun_s": 2.0, "verify_s": 10.0},
}
INIT_TIMEOUT = 600.0
FIGURES = ("init_s", "rerun_s", "verify_s", "status_s")
VERIFY = ("verify", "--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE)


SOURCES = ("agent", "overlayctl", "templates")


@contextlib.contextmanager
def source_snapshot(agent_rev: str | None = None) -> Iterator[str]:
    """A frozen copy of overlayctl's and the agent's sources (the PYTHONPATH for the runs);
    agent/ from git revision AGENT_REV when given."""
    snapshot = tempfile.mkdtemp(prefix="overlayctl-bootstrap-src-", dir="/var/tmp")
    try:
        for name in SOURCES:
            if name == "agent" and agent_rev:
                archive = subprocess.run(["git", "-C", ROOT, "archive", agent_rev, name],
                                         check=True, capture_output=True).stdout  # fmt: skip
                subprocess.run(["tar", "-x", "-C", snapshot], input=archive, check=True)
                continue
            shutil.copytree(
                Path(ROOT) / name,
                Path(snapshot) / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        yield snapshot
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


class Run:
    """One overlayctl run: wall seconds, exit status, stdout (the JSON document with -o json)
    and stderr (progress and error lines)."""

    pythonpath = ""  # the source snapshot

    def __init__(self, lab: state.LabState, *args: str) -> None:
        env = {**os.environ, "OVERLAYCTL_INVENTORY": str(lab.inventory)}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, *args]
        cpu = CpuMeter(lab)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        try:
            self.stdout, self.stderr = proc.communicate(timeout=INIT_TIMEOUT)
        finally:
            reap(proc)
        self.seconds = time.monotonic() - started
        self.cpu = cpu.spent()
        self.returncode = proc.returncode

    def doc(self) -> dict:
        """The -o json document ({} when there is none)."""
        try:
            found = json.loads(self.stdout)
        except json.JSONDecodeError:
            return {}
        return found if isinstance(found, dict) else {}

    def changed(self) -> list[str]:
        """The host/phase progress lines of a run that changed something."""
        return [line for line in self.stderr.splitlines()
                if re.search(r"\b[1-9]\d* changes?\b", line)]  # fmt: skip


class CpuMeter:
    """The CPU a run cost from here on: the lab hosts' own (their cgroups: systemd, sshd,
    docker, etcd, the agents; on real hosts each has its own CPUs) and the rest of this
    machine's (overlayctl on the workstation, the kernel, anything else running), and the
    floor they set on this machine: no wall time can be shorter than all of it spread over
    every core."""

    def __init__(self, lab: state.LabState) -> None:
        self.groups = [h.cgroup for h in lab.hosts]
        self.hosts, (self.busy, self.steal) = self._hosts(), cgroups.machine_cpu_seconds()

    def _hosts(self) -> float:
        return sum(cgroups.cpu_seconds(g) or 0.0 for g in self.groups)

    def spent(self) -> dict[str, float]:
        hosts = self._hosts() - self.hosts
        busy, steal = (
            now - then
            for now, then in zip(
                cgroups.machine_cpu_seconds(), (self.busy, self.steal), strict=True
            )
        )
        return {
            "hosts_s": round(hosts, 2),
            "rest_s": round(max(busy - hosts, 0.0), 2),
            "floor_s": round(max(busy, hosts) / (os.cpu_count() or 1), 2),
            "steal_s": round(steal, 2),
        }


def cpu_text(result: Run) -> str:
    cpu = result.cpu
    return (
        f"; CPU: hosts {cpu['hosts_s']:.1f} s, rest {cpu['rest_s']:.1f} s, floor on "
        f"{os.cpu_count()} cores {cpu['floor_s']:.1f} s, stolen {cpu['steal_s']:.1f} s"
    )


def summary(result: Run) -> str:
    """What init's document says in one line, or the run's last error lines."""
    doc = result.doc()
    if "changes" in doc:
        return (
            f"{doc['changes']} changes, {len(doc.get('hosts', {}))} hosts, exit {result.returncode}"
        )
    return failure(result)


def failure(result: Run) -> str:
    """The lines of a failed run that say why (failed hosts and errors)."""
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.search(r"fail|error|refused|timed out", line, re.I)
    ]
    return "\n".join(lines[-10:]) or (result.stderr.strip() or result.stdout.strip())[-300:]


def one_size(hosts: int) -> dict:
    """Bring up HOSTS full hosts, time init twice and verify once, remove the lab."""
    name = unique_name("b")
    row: dict = dict.fromkeys(("init_s", "rerun_s", "verify_s", "status_s", "phases_s"))
    row["cpu_s"] = {}
    print(f"bootstrap: {hosts} hosts: lab up ({name})", flush=True)
    started = time.monotonic()
    try:
        lab = labs.up(name, hosts, SUBNET, progress=lambda _m: None)
        print(f"bootstrap: {hosts} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        result = Run(lab, "init", "-o", "json")
        print(f"  init:   {result.seconds:6.2f} s  {summary(result)}{cpu_text(result)}", flush=True)
        row["phases_s"] = result.doc().get("phases_s")
        print(f"  phases (s): {row['phases_s']}", flush=True)
        if result.returncode != 0:
            row["error"] = f"init exited {result.returncode}: {failure(result)}"
            print(row["error"])
            return row
        row["init_s"] = result.seconds
        row["cpu_s"]["init"] = result.cpu
        result = Run(lab, "init", "-o", "json")
        print(f"  re-run: {result.seconds:6.2f} s  {summary(result)}{cpu_text(result)}", flush=True)
        if result.returncode != 0 or result.doc().get("changes") != 0:
            row["error"] = f"re-run was not a no-change run: {summary(result)}"
            print("  re-run changed:\n    " + "\n    ".join(result.changed() or [failure(result)]))
        row["rerun_s"] = result.seconds
        row["cpu_s"]["rerun"] = result.cpu
        result = Run(lab, *VERIFY, "-o", "json")
        doc = result.doc()
        print(f"  verify: {result.seconds:6.2f} s  ok {doc.get('ok')}, "
              f"{len(doc.get('pairs', []))} pairs{cpu_text(result)}", flush=True)  # fmt: skip
        if result.returncode != 0 or not doc.get("ok") or len(doc["pairs"]) != hosts * hosts:
            row.setdefault("error", f"verify failed: {failure(result)}")
        row["verify_s"] = result.seconds
        row["cpu_s"]["verify"] = result.cpu
        result = Run(lab, "status", "-o", "json")
        print(f"  status: {result.seconds:6.2f} s  ok {result.doc().get('ok')}{cpu_text(result)}",
              flush=True)  # fmt: skip
        if result.returncode != 0 or not result.doc().get("ok"):
            row.setdefault("error", f"status not healthy: {failure(result)}")
        row["status_s"] = result.seconds
        row["cpu_s"]["status"] = result.cpu
        return row
    except subprocess.TimeoutExpired as exc:
        row["error"] = f"overlayctl did not finish within {exc.timeout} s"
        print(row["error"])
        return row
    finally:
        labs.down(name, progress=lambda _m: None)


def goal_table(results: dict[str, dict]) -> str:
    """Each figure that has a goal, beside it, and under it the floor its CPU sets here."""
    rows: list[tuple[str, float | None, str, float | None]] = []
    for size, goals in GOALS.items():
        for key, goal in goals.items():
            if size in results:
                rows.append((f"{key[:-2]}, {size} hosts", results[size][key], "s", goal))
                cpu = results[size]["cpu_s"].get(key[:-2])
                if cpu:
                    rows.append(("  its CPU / cores (floor)", cpu["floor_s"], "s", None))
    return goal_rows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="3,10,25", help="comma-separated lab sizes")
    parser.add_argument("--agent-rev", help="take agent/ from this git revision (e.g. HEAD)")
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
    with interrupt_on_sigterm(), source_snapshot(args.agent_rev) as snapshot:
        Run.pythonpath = snapshot
        try:
            for size in sizes:
                results[str(size)] = one_size(size)
        except KeyboardInterrupt:
            print("bootstrap: interrupted; the lab is removed", file=sys.stderr)
            return 130
    print()
    print(f"{'hosts':>5} {'init s':>8} {'re-run s':>9} {'verify s':>9} {'status s':>9}  error")
    for size, row in results.items():
        shown = ["n/a" if row[k] is None else f"{row[k]:.2f}" for k in FIGURES]
        error = row["error"].splitlines()[0] if row.get("error") else ""
        print(f"{size:>5} {shown[0]:>8} {shown[1]:>9} {shown[2]:>9} {shown[3]:>9}  {error}")
    print()
    print(goal_table(results))
    line = {
        size: {key: rounded(row[key], 2) for key in FIGURES}
        | {"phases_s": row["phases_s"], "cpu_s": row["cpu_s"]}
        | ({"goals": GOALS[size]} if size in GOALS else {})
        | ({"error": row["error"]} if "error" in row else {})
        for size, row in results.items()
    }
    print(json.dumps({"hosts": line}))
    return 0 if all("error" not in row for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
