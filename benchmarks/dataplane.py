"""Data-plane throughput and latency: overlay-agent's three backends against kernel baselines.

Everything runs on light lab hosts (network namespaces on a lab LAN, see overlayctl.lab.light),
two hosts per path, each path in its own lab:

- ``vxlan``, ``host-gw``, ``udp``: iperf3 (TCP) between two containers on two hosts, each
  container on a ``docker0`` bridge, the backend programmed by overlay-agent's code through
  tests/dataplane_driver.py (FORWARD policy ACCEPT and no iptables rules, as for the baselines);
- ``veth``: the same container topology routed by hand (``ip route add <peer subnet> via
  <peer host>``): bare veths, bridges and the LAN, no overlay; the reference for host-gw;
- ``kernel-vxlan``: the same containers over a VXLAN device built by hand with iproute2
  (``ip link add vxb type vxlan id 42 remote ... dstport 4789``); the reference for vxlan/udp;
- ``host-lan`` / ``host-vxlan``: host to host (no containers) over the LAN and over a
  hand-built VXLAN, for context: what the container hops (veth, bridge, forwarding) cost.

RUNS rounds over all paths in turn (so load from other work on the machine spreads evenly),
median per path, plus the average ping RTT. The backends run under ``--agent-python``, by
default the system python3 that ``overlayctl init`` installs the agent with on a Debian host
(the udp backend forwards in Python; this checkout's development interpreter is a slower
build). Prints a table, the ratios the issue asks for, and as its last line one JSON object
with the medians. Usage (root):

    .venv/bin/python benchmarks/dataplane.py [--runs 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from _lab import HOST_PYTHON  # sets sys.path for the imports below

from overlayctl.lab.light import LightLab
from tests.conftest import unique_name
from tests.dataplane_driver import Cluster, ip

PORT = 5201
BACKENDS = ("vxlan", "host-gw", "udp")
PATHS = ("host-lan", "host-vxlan", "veth", "kernel-vxlan", *BACKENDS)
# Only on request (--paths): the udp backend in flannel's format next to a --udp-options one.
EXTRA_PATHS = ("udp-flannel",)


def _in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def iperf_server(ns: str) -> Iterator[None]:
    """An iperf3 server in namespace NS, stopped by PID afterwards."""
    proc = subprocess.Popen(
        _in_ns(ns, "iperf3", "-s", "-p", str(PORT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def iperf(ns: str, target: str, seconds: int) -> float:
    """One TCP iperf3 run from NS to TARGET: received Gbit/s."""
    out = subprocess.run(
        _in_ns(ns, "iperf3", "-c", target, "-p", str(PORT), "-t", str(seconds), "-J"),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    try:
        result = json.loads(out.stdout)
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"iperf3 {ns} -> {target} failed: {out.stdout[-500:]}") from exc


def rtt_ms(ns: str, target: str, count: int = 100) -> float:
    """Average ping RTT from NS to TARGET in milliseconds (idle path: 10 ms apart; 100 of
    them, as single wake-ups on a VM vary by tenths of a millisecond)."""
    out = subprocess.run(
        _in_ns(ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.01", "-W", "2", target),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    found = re.search(r"= [\d.]+/([\d.]+)/", out)
    if not found:
        raise RuntimeError(f"ping {ns} -> {target} failed: {out[-300:]}")
    return float(found.group(1))


@dataclass(frozen=True)
class Path:
    """One measured path: iperf3 from CLIENT namespace to TARGET served in SERVER namespace."""

    client: str
    server: str
    target: str


def _lab(stack: contextlib.ExitStack) -> LightLab:
    lab = LightLab(unique_name("b"))
    stack.callback(lab.close)
    return lab


def _hand_vxlan(ns: str, local: str, remote: str) -> None:
    """What anyone would type: a point-to-point VXLAN device over eth0 (iproute2)."""
    ip("-n", ns, "link", "add", "vxb", "type", "vxlan", "id", "42", "dstport", "4789",
       "local", local, "remote", remote, "dev", "eth0")  # fmt: skip
    ip("-n", ns, "link", "set", "vxb", "mtu", "1450", "up")


def underlay(stack: contextlib.ExitStack) -> dict[str, Path]:
    """Host to host over the bare lab LAN and over a hand-built VXLAN (no containers)."""
    lab = _lab(stack)
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    for number, (host, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        _hand_vxlan(host.netns, host.address, peer.address)
        ip("-n", host.netns, "addr", "add", f"10.77.0.{number}/24", "dev", "vxb")
    return {
        "host-lan": Path(h1.netns, h2.netns, h2.address),
        "host-vxlan": Path(h1.netns, h2.netns, "10.77.0.2"),
    }


def host_python() -> str:
    """The interpreter `overlayctl init` runs the agent with on a Debian host (the system
    python3, not this checkout's development venv: its build alone changes the udp backend's
    speed by ~15 %), or this one if the machine has none."""
    return HOST_PYTHON if os.access(HOST_PYTHON, os.X_OK) else sys.executable


def _containers(
    stack: contextlib.ExitStack,
    backend: str,
    options: dict | None = None,
    python: str = sys.executable,
) -> Cluster:
    cluster = Cluster(_lab(stack), backend, count=2, forward_policy="ACCEPT", python=python)
    cluster.config["Backend"].update(options or {})
    stack.callback(cluster.close)
    return cluster


def _path(cluster: Cluster) -> Path:
    c1, c2 = cluster.nodes
    return Path(c1.container_ns, c2.container_ns, c2.container_ip)


def by_hand(stack: contextlib.ExitStack) -> dict[str, Path]:
    """Container to container on the backends' topology, routed by hand with iproute2:
    ``veth`` = plain routes via the peer host (no overlay), ``kernel-vxlan`` = a hand-built
    VXLAN device with a route via the peer's .0 (which answers ARP on its VXLAN device)."""
    bare, kvx = _containers(stack, "none"), _containers(stack, "none")
    for node, peer in itertools.permutations(bare.nodes):
        ip("-n", node.host.netns, "route", "add", peer.subnet, "via", peer.host.address)
    for node, peer in itertools.permutations(kvx.nodes):
        ns = node.host.netns
        _hand_vxlan(ns, node.host.address, peer.host.address)
        ip("-n", ns, "addr", "add", node.subnet.replace("/24", "/32"), "dev", "vxb")
        gateway = peer.subnet.split("/")[0]
        ip("-n", ns, "route", "add", peer.subnet, "via", gateway, "dev", "vxb", "onlink")
    return {"veth": _path(bare), "kernel-vxlan": _path(kvx)}


def agent_backend(
    stack: contextlib.ExitStack,
    name: str,
    options: dict | None = None,
    python: str = sys.executable,
) -> Path:
    """Container to container over overlay-agent's NAME backend (no iptables: same path),
    OPTIONS added to its config's Backend object, the backend run by PYTHON."""
    cluster = _containers(stack, name, options, python)
    cluster.start_all(iptables=False)
    cluster.mesh()
    if cluster.ping_failures():
        raise RuntimeError(f"{name}: containers cannot reach each other")
    return _path(cluster)


def measure_all(paths: dict[str, Path], runs: int, seconds: int) -> dict[str, dict]:
    """RTT, then RUNS rounds of iperf3 over every path in turn: load from other work on the
    machine spreads over all paths instead of biasing one of them."""
    results: dict[str, dict] = {
        name: {"gbps": [], "rtt_ms": rtt_ms(p.client, p.target)} for name, p in paths.items()
    }
    with contextlib.ExitStack() as servers:
        for path in {p.server for p in paths.values()}:
            servers.enter_context(iperf_server(path))
        for _ in range(runs):
            for name, path in paths.items():
                results[name]["gbps"].append(iperf(path.client, path.target, seconds))
    for row in results.values():
        row["median"] = statistics.median(row["gbps"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--udp-options",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra Backend keys for the udp path, e.g. '{\"Batching\": true}'",
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="comma-separated paths to measure (default: all but udp-flannel, the udp backend "
        "without --udp-options for comparison); ratios need both of their paths",
    )
    parser.add_argument(
        "--agent-python",
        default=host_python(),
        metavar="PATH",
        help="the interpreter that runs the agent's backends (default: the system python3, "
        "as on a host; the udp backend's forwarding is Python)",
    )
    args = parser.parse_args(argv)
    if os.sep in args.agent_python:  # the lab hosts start it from another directory
        args.agent_python = os.path.abspath(args.agent_python)
    wanted = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(wanted) - set(PATHS + EXTRA_PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}: choose from {', '.join(PATHS + EXTRA_PATHS)}")
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        paths: dict[str, Path] = {}
        if {"host-lan", "host-vxlan"} & set(wanted):
            paths.update(underlay(stack))
        if {"veth", "kernel-vxlan"} & set(wanted):
            paths.update(by_hand(stack))
        for name in BACKENDS:
            if name in wanted:
                options = args.udp_options if name == "udp" else None
                paths[name] = agent_backend(stack, name, options, args.agent_python)
        if "udp-flannel" in wanted:
            paths["udp-flannel"] = agent_backend(stack, "udp", python=args.agent_python)
        paths = {name: paths[name] for name in PATHS + EXTRA_PATHS if name in wanted}
        results = measure_all(paths, args.runs, args.seconds)

    print(f"{'path':<14} {'runs (Gbit/s)':<26} {'min':>6} {'median':>7} {'max':>6} {'RTT ms':>7}")
    for name, row in results.items():
        runs = " ".join(f"{g:.2f}" for g in row["gbps"])
        print(
            f"{name:<14} {runs:<26} {min(row['gbps']):>6.2f} {row['median']:>7.2f} "
            f"{max(row['gbps']):>6.2f} {row['rtt_ms']:>7.3f}"
        )
    version = subprocess.run(
        [args.agent_python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    print(f"agent interpreter: {args.agent_python} (Python {version})")
    if args.udp_options:
        print(f"udp Backend options: {json.dumps(args.udp_options)}")

    def ratio(a: str, b: str) -> float:
        if a not in results or b not in results:
            return float("nan")
        return round(results[a]["median"] / results[b]["median"], 3)

    ratios = {
        "vxlan_vs_kernel_vxlan": ratio("vxlan", "kernel-vxlan"),
        "hostgw_vs_veth": ratio("host-gw", "veth"),
        "udp_vs_kernel_vxlan": ratio("udp", "kernel-vxlan"),
    }
    print(
        f"vxlan/kernel-vxlan {ratios['vxlan_vs_kernel_vxlan']} (goal >= 0.95)   "
        f"host-gw/veth {ratios['hostgw_vs_veth']} (goal >= 0.95)   "
        f"udp/kernel-vxlan {ratios['udp_vs_kernel_vxlan']}"
    )
    print(
        f"against the host-to-host underlay: vxlan/host-vxlan {ratio('vxlan', 'host-vxlan')}   "
        f"host-gw/host-lan {ratio('host-gw', 'host-lan')}"
    )
    summary: dict[str, float] = {k: v for k, v in ratios.items() if not math.isnan(v)}
    for name in results:
        key = name.replace("-", "_").replace("host_gw", "hostgw")
        summary[f"{key}_gbps"] = round(results[name]["median"], 3)
        summary[f"{key}_rtt_ms"] = round(results[name]["rtt_ms"], 3)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
