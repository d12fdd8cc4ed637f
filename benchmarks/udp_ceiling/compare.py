"""Side by side: kernel VXLAN, the udp backend with Batching (the agent's Python loop) and the
same data plane in C (udp_ceiling.c), optionally with variants of either. See README.md.

A study tool for issue #8, not part of overlayctl or of CI. Same topology as
benchmarks/dataplane.py (light lab hosts, a container each on docker0, iperf3 container to
container); every path in its own lab (unique names), all deleted at the end. Needs root and a
C compiler (``cc``):

    flock /tmp/overlayctl-bench.lock .venv/bin/python benchmarks/udp_ceiling/compare.py \
        [--runs 3] [--seconds 5] [--paths kernel-vxlan,py-agent,c] \
        [--c NAME='--napi'] [--py NAME='path/to/loop.py --opt']

``--c NAME=ARGS`` adds a path running the C loop with extra ARGS; ``--py NAME=SCRIPT ARGS``
a path running a standalone Python forwarder SCRIPT (same command line as the C loop) in place
of the agent. For every path it also reports the forwarders' CPU seconds per GB moved.

The C program is compiled into a private temporary directory, removed at the end, unless
UDP_CEILING_BIN names the binary to build (or, with ``--no-build``, to use as it is).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# E402 below: these modules are found only once ROOT is on sys.path (benchmarks' convention).
import dataplane  # noqa: E402
from dataplane import Path as IperfPath  # noqa: E402

from tests.conftest import unique_name  # noqa: E402
from tests.dataplane_driver import _child_of, ip  # noqa: E402

# Our labs are named u8<random> (namespaces ovl-u8...-h1, u8...-c1): told apart from others'.
dataplane.unique_name = lambda prefix="t": unique_name("u8")

TICK = os.sysconf("SC_CLK_TCK")
SOURCE = HERE / "udp_ceiling.c"
# A path: where iperf3 runs, and the PIDs of its forwarders (none for kernel VXLAN).
Measured = tuple[IperfPath, list[int]]


def c_binary(stack: contextlib.ExitStack, *, build: bool) -> Path:
    """The C loop's binary: $UDP_CEILING_BIN, or one in a fresh private temporary directory
    (removed when STACK closes); compiled from udp_ceiling.c with ``cc -O2`` if BUILD."""
    given = os.environ.get("UDP_CEILING_BIN")
    if given:
        binary = Path(given)
    elif build:
        workdir = tempfile.mkdtemp(prefix="udp_ceiling.")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        binary = Path(workdir) / "udp_ceiling"
    else:
        raise SystemExit("--no-build needs UDP_CEILING_BIN (the binary to run)")
    if build:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    return binary


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of PIDS (all their threads)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / TICK, system / TICK


def machine_busy() -> tuple[int, int]:
    """Jiffies of the whole machine since boot: total, and idle + iowait."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def kernel_vxlan(stack: contextlib.ExitStack) -> Measured:
    """The reference: a VXLAN device built by hand on each host, as in dataplane.py."""
    kvx = dataplane._containers(stack, "none")
    for node, peer in itertools.permutations(kvx.nodes):
        ns = node.host.netns
        dataplane._hand_vxlan(ns, node.host.address, peer.host.address)
        ip("-n", ns, "addr", "add", node.subnet.replace("/24", "/32"), "dev", "vxb")
        gateway = peer.subnet.split("/")[0]
        ip("-n", ns, "route", "add", peer.subnet, "via", gateway, "dev", "vxb", "onlink")
    return dataplane._path(kvx), []


def py_agent(stack: contextlib.ExitStack) -> Measured:
    """The agent itself with the udp backend in Batching mode."""
    cluster = dataplane._containers(stack, "udp", {"Batching": True})
    cluster.start_all(iptables=False)
    cluster.mesh()
    if cluster.ping_failures():
        raise RuntimeError("py-agent: containers cannot reach each other")
    pids = [_child_of(n.proc.pid) or n.proc.pid for n in cluster.nodes if n.proc]
    return dataplane._path(cluster), pids


def _stop_forwarder(proc: subprocess.Popen, child: int, log: Path, label: str) -> None:
    """SIGTERM to the forwarder (nsenter exits with it), SIGKILL if it lingers; print the
    last line of its log (its counters)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        for pid in (child, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=5)
    lines = log.read_text().strip().splitlines()
    print(f"# {label}: {lines[-1] if lines else ''}", file=sys.stderr)


def _start_forwarder(
    stack: contextlib.ExitStack, node, peer, *, name: str, argv: list[str], limit: int
) -> int:
    """Start ARGV as NODE's forwarder towards PEER, wait until it is ready, set up its TUN
    like the agent does; returns the forwarder's PID (stopped when STACK closes)."""
    hns = node.host.netns
    mtu = json.loads(ip("-n", hns, "-j", "link", "show", "eth0").stdout)[0]["mtu"]
    segment = mtu - 28
    ready = node.host.base / f"{name}.ready"
    ready.unlink(missing_ok=True)
    log = node.host.base / f"{name}.log"
    command = [
        *argv,
        *("-t", "flannel0", "-b", node.host.address, "-s", str(segment)),
        *("-r", f"{peer.subnet}={peer.host.address}", "-d", str(limit), "--ready", str(ready)),
    ]
    with log.open("ab") as out:
        proc = node.host.popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {log.read_text()}")
        time.sleep(0.05)
    child = _child_of(proc.pid) or proc.pid
    stack.callback(_stop_forwarder, proc, child, log, f"{name} {node.host.name}")
    address = f"{node.subnet.split('/')[0]}/16"
    ip("-n", hns, "link", "set", "flannel0", "mtu", str(segment), "txqueuelen", "5000", "up")
    ip("-n", hns, "addr", "add", address, "dev", "flannel0")
    ip("-n", hns, "route", "replace", "10.5.0.0/16", "dev", "flannel0", "scope", "link")
    return child


def forwarder(stack: contextlib.ExitStack, *, name: str, argv: list[str], limit: int) -> Measured:
    """The udp backend's topology with ARGV (the C loop, or a Python copy) as the forwarder
    on each host: TUN flannel0 at <subnet>.0/16, MTU eth0 - 28, txqueuelen 5000. The
    forwarders exit by themselves after LIMIT seconds."""
    cluster = dataplane._containers(stack, "none")
    pids = [
        _start_forwarder(stack, node, peer, name=name, argv=argv, limit=limit)
        for node, peer in itertools.permutations(cluster.nodes)
    ]
    if cluster.ping_failures():
        raise RuntimeError(f"{name}: containers cannot reach each other")
    return dataplane._path(cluster), pids


def start_perf(where: Path, name: str, seconds: int) -> list[subprocess.Popen]:
    """perf record (call graphs) and perf stat over the whole machine for SECONDS - 2 s of
    the run: both end by themselves (sleep), nothing to kill."""
    where.mkdir(parents=True, exist_ok=True)
    span = str(max(1, seconds - 2))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    events = "task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter"
    record = ["perf", "record", "-a", "-g", "-F", "499", "-o", str(where / f"{name}.data")]
    stat = ["perf", "stat", "-a", "-e", events, "-o", str(where / f"{name}.stat")]
    return [subprocess.Popen([*cmd, "--", "sleep", span], **quiet) for cmd in (record, stat)]


def build_paths(
    stack: contextlib.ExitStack, args: argparse.Namespace, binary: Path
) -> dict[str, Measured]:
    """Every path asked for, each in its own lab (torn down when STACK closes)."""
    limit = 60 + args.runs * 12 * args.seconds  # forwarders exit by themselves after this
    paths: dict[str, Measured] = {}
    for name in (p for p in args.paths.split(",") if p):
        if name == "kernel-vxlan":
            paths[name] = kernel_vxlan(stack)
        elif name == "py-agent":
            paths[name] = py_agent(stack)
        elif name == "c":
            paths[name] = forwarder(stack, name=name, argv=[str(binary)], limit=limit)
        else:
            raise SystemExit(f"unknown path {name}")
    for spec in args.c:
        name, _, extra = spec.partition("=")
        argv = [str(binary), *shlex.split(extra)]
        paths[name] = forwarder(stack, name=name, argv=argv, limit=limit)
    for spec in args.py:
        name, _, rest = spec.partition("=")
        script, *extra = shlex.split(rest)
        argv = [sys.executable, str(Path(script).resolve()), *extra]
        paths[name] = forwarder(stack, name=name, argv=argv, limit=limit)
    return paths


def measure_once(path: IperfPath, pids: list[int], seconds: int, perf: Path | None) -> dict:
    """One iperf3 run over PATH: Gbit/s, the forwarders' CPU-s per GB (all and user only) and
    the fraction of the machine that was busy; under perf if PERF (a folder) is given."""
    cpu0, (total0, idle0) = cpu_seconds(pids), machine_busy()
    profilers = start_perf(perf.parent, perf.name, seconds) if perf else []
    gbps = dataplane.iperf(path.client, path.target, seconds)
    cpu1, (total1, idle1) = cpu_seconds(pids), machine_busy()
    for proc in profilers:
        proc.wait(timeout=120)
    gbytes = gbps * seconds / 8
    nan = float("nan")
    return {
        "gbps": gbps,
        "cpu_per_gb": (sum(cpu1) - sum(cpu0)) / gbytes if pids else nan,
        "user_per_gb": (cpu1[0] - cpu0[0]) / gbytes if pids else nan,
        "busy": 1 - (idle1 - idle0) / max(1, total1 - total0),
    }


def measure_all(
    paths: dict[str, Measured], *, runs: int, seconds: int, perf: str | None
) -> dict[str, dict]:
    """RTT, then RUNS rounds of iperf3 over every path in turn (load from other work spreads
    over all paths); PERF profiles the first run of each path."""
    keys = ("gbps", "cpu_per_gb", "user_per_gb", "busy")
    results: dict[str, dict] = {}
    for name, (path, _pids) in paths.items():
        results[name] = {key: [] for key in keys}
        results[name]["rtt_ms"] = dataplane.rtt_ms(path.client, path.target)
    with contextlib.ExitStack() as servers:
        for server in {p.server for p, _ in paths.values()}:
            servers.enter_context(dataplane.iperf_server(server))
        for run in range(runs):
            for name, (path, pids) in paths.items():
                profile = Path(perf) / name if perf and run == 0 else None
                sample = measure_once(path, pids, seconds, profile)
                for key in keys:
                    results[name][key].append(sample[key])
    return results


def report(results: dict[str, dict]) -> None:
    """A table (ratio = median / kernel-vxlan's median), then one JSON line of the medians."""
    kvx = results.get("kernel-vxlan")
    base = statistics.median(kvx["gbps"]) if kvx else 0
    print(
        f"{'path':<16} {'runs (Gbit/s)':<20} {'min':>6} {'median':>7} {'max':>6} "
        f"{'/kvx':>6} {'CPU-s/GB':>9} {'user':>5} {'busy':>5} {'RTT ms':>7}"
    )
    summary = {}
    for name, row in results.items():
        med = statistics.median(row["gbps"])
        ratio = med / base if base else float("nan")
        cpu = statistics.median(row["cpu_per_gb"])
        user = statistics.median(row["user_per_gb"])
        busy = statistics.median(row["busy"])
        runs = " ".join(f"{g:.2f}" for g in row["gbps"])
        print(
            f"{name:<16} {runs:<20} {min(row['gbps']):>6.2f} {med:>7.2f} "
            f"{max(row['gbps']):>6.2f} {ratio:>6.3f} {cpu:>9.2f} {user:>5.2f} {busy:>5.2f} "
            f"{row['rtt_ms']:>7.3f}"
        )
        summary[name] = {
            "gbps": [round(g, 3) for g in row["gbps"]],
            "median": round(med, 3),
            "ratio": round(ratio, 3),
            "cpu_s_per_gb": round(cpu, 3),
            "user_s_per_gb": round(user, 3),
        }
    print(json.dumps(summary))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--paths", default="kernel-vxlan,py-agent,c")
    parser.add_argument("--c", action="append", default=[], metavar="NAME=ARGS")
    parser.add_argument("--py", action="append", default=[], metavar="NAME=SCRIPT ARGS")
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="run $UDP_CEILING_BIN as it is instead of compiling udp_ceiling.c",
    )
    parser.add_argument(
        "--perf",
        metavar="DIR",
        help="perf record -a -g the first run of each "
        "path into DIR/<path>.data (also perf stat -a into DIR/<path>.stat)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        binary = c_binary(stack, build=not args.no_build)
        paths = build_paths(stack, args, binary)
        results = measure_all(paths, runs=args.runs, seconds=args.seconds, perf=args.perf)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
