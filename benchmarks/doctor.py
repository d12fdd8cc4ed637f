"""Doctor: `overlayctl doctor` wall time on a healthy 3-host lab, per backend.

One lab of 3 full hosts (`lab up`, not timed), `overlayctl init` with vxlan, then for each
backend in turn (`init --force` switches a live cluster, as an operator would) RUNS timed
`overlayctl doctor -o json` runs from the lab's workstation namespace: the whole command as a
user waits for it (SSH sessions, etcd's leases, every host's facts, the probes between every
pair with tracefs, the checks). Each run must find the cluster healthy (exit 0, `ok: true`):
a slow run that is also a false alarm proves nothing. The lab is removed at the end (always,
also on errors, Ctrl-C and SIGTERM). Issue #18's goal: 15 s or less on 3 hosts.

Usage (root): .venv/bin/python benchmarks/doctor.py [--runs 3] [--backends vxlan,host-gw,udp]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _lab import goal_rows, interrupt_on_sigterm, rounded  # sets sys.path

from overlayctl.lab import labs, state
from tests.conftest import unique_name

OVERLAYCTL = str(Path(sys.executable).parent / "overlayctl")
SUBNET = "192.168.255.0/24"
GOAL_S = 15.0
TIMEOUT_S = 600.0
BACKENDS = ("vxlan", "host-gw", "udp")


def overlayctl(
    lab: state.LabState, inventory: Path, *args: str
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, the finished process) of one overlayctl run from the workstation."""
    env = {**os.environ, "OVERLAYCTL_INVENTORY": str(inventory)}
    argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, *args]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                            check=False)  # fmt: skip
    return time.monotonic() - started, result


def with_backend(lab: state.LabState, backend: str) -> Path:
    """The lab's inventory with BACKEND, written beside it."""
    doc = yaml.safe_load(lab.inventory.read_text())
    doc["cluster"]["backend"] = backend
    path = lab.dir / f"doctor-{backend}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def one_backend(lab: state.LabState, backend: str, runs: int, first: bool) -> dict:
    """Switch the cluster to BACKEND, then time RUNS doctor runs; a row for the JSON line."""
    inventory = with_backend(lab, backend)
    seconds, result = overlayctl(lab, inventory, "init", *([] if first else ["--force"]))
    print(f"  {backend}: init {seconds:.1f} s, exit {result.returncode}", flush=True)
    if result.returncode != 0:
        return {"runs_s": [], "error": f"init exited {result.returncode}: "
                + (result.stderr.strip() or result.stdout.strip())[-300:]}  # fmt: skip
    times: list[float] = []
    for run in range(1, runs + 1):
        seconds, result = overlayctl(lab, inventory, "doctor", "-o", "json")
        try:
            doc = json.loads(result.stdout)
        except json.JSONDecodeError:
            doc = {"ok": False, "findings": [], "errors": [result.stderr.strip()[-300:]]}
        print(f"  {backend}: doctor run {run}: {seconds:.2f} s, exit {result.returncode},"
              f" {len(doc['findings'])} findings", flush=True)  # fmt: skip
        if result.returncode != 0 or not doc["ok"]:
            problems = [f"{f['severity']} {f['check']} {f['host']}: {f['message']}"
                        for f in doc["findings"]] + [str(e) for e in doc["errors"]]  # fmt: skip
            return {"runs_s": times, "error": "not healthy: " + "; ".join(problems)[:500]}
        times.append(seconds)
    return {"runs_s": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="doctor runs per backend")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or not set(backends) <= set(BACKENDS) or not 1 <= args.runs <= 20:
        parser.error(f"--backends from {', '.join(BACKENDS)}; --runs from 1 to 20")
    if os.geteuid() != 0:
        print("needs root (full lab hosts)", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    name = unique_name("bd")
    with interrupt_on_sigterm():
        try:
            print(f"doctor: 3 hosts: lab up ({name})", flush=True)
            lab = labs.up(name, 3, SUBNET, progress=lambda _m: None)
            for i, backend in enumerate(backends):
                results[backend] = one_backend(lab, backend, args.runs, first=i == 0)
        except KeyboardInterrupt:
            print("doctor: interrupted; the lab is removed", file=sys.stderr)
            return 130
        except subprocess.TimeoutExpired as exc:
            print(f"doctor: overlayctl did not finish within {exc.timeout} s", file=sys.stderr)
            return 1
        finally:
            labs.down(name, progress=lambda _m: None)
    rows = []
    for backend, row in results.items():
        runs = row["runs_s"]
        row["median_s"] = rounded(statistics.median(runs), 2) if runs else None
        row["max_s"] = rounded(max(runs), 2) if runs else None
        row["runs_s"] = [rounded(s, 2) for s in runs]
        rows.append((f"doctor, 3 hosts, {backend}, slowest", row["max_s"], "s", GOAL_S))
        if "error" in row:
            print(f"{backend}: {row['error']}")
    print()
    print(goal_rows(rows))
    print(json.dumps({"hosts": 3, "goal_s": GOAL_S, "backends": results}))
    return 0 if all("error" not in row for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
