"""Scale: N real overlay-agents (host-gw) on N light lab hosts against one real etcd.

One light lab (see overlayctl.lab.light): etcd in its own light host, one light host per agent,
all on one LAN (10.240.0.0/16, so any N up to a few thousand fits). The host-gw backend: it is
the cheapest per host (no device, one route per peer), so the figures show the agent and etcd,
not VXLAN devices; the control plane (lease, watch, routes) is the same for every backend.

1. all N agents are started at once (no stagger) -> time until every one is ready: the mtime
   of its subnet.env (written just before /readyz turns 200; /readyz is checked afterwards);
2. duplicates, from etcd: a PublicIP holding more than one subnet, a subnet claimed in
   subnet.env by more than one host, or a subnet.env not matching the etcd lease of its host;
3. etcd requests per agent: etcd's own gRPC counters (grpc_server_started_total, from its
   /metrics) over the start, divided by N; also over 30 s of idle;
4. one more host joins -> time until each agent has a route to its subnet, from the moment its
   lease appears in etcd (an `etcdctl watch` in the etcd host) and from the joiner's start;
   route additions are stamped by rtnetlink sockets in every host (benchmarks/_routes.py);
5. RSS (VmRSS) per agent, and CPU (utime+stime) per agent over 30 s of idle.

Everything lives in the lab's namespaces; processes are killed by PID and the lab is closed
(host PID 1s killed, namespaces deleted) on any exit, Ctrl-C and SIGTERM included. Usage (root):

    .venv/bin/python benchmarks/scale.py [--agents 100] [--idle 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from ipaddress import IPv4Network
from pathlib import Path

from _lab import (  # sets sys.path for the imports below
    Timeout,
    child_pid,
    cpu_seconds,
    cpu_split,
    goal_rows,
    host_style_agent,
    interrupt_on_sigterm,
    percentile,
    proc_status_kb,
    reap,
    rounded,
    wait_for,
)

from overlayctl.lab.light import LightHost, LightLab
from tests.conftest import unique_name
from tests.integration.conftest import ETCD_BIN

DEV_AGENT = str(Path(sys.executable).parent / "overlay-agent")
PREFIX = "/coreos.com/network"
NETWORK = "10.6.0.0/16"
LAN = IPv4Network("10.240.0.0/16")
HEALTHZ_PORT = 8471
GOALS = {"all_ready_s": 10.0, "route_p99_s": 0.5, "rss_mb": 50.0}


def lan_address(index: int) -> str:
    """The LAN address of host INDEX (0 is etcd): 10.240.0.10, .11, ..."""
    return str(LAN.network_address + 10 + index)


class Scale:
    """The lab, etcd, the agents and what was measured on them."""

    def __init__(self, lab: LightLab, agent: str) -> None:
        self.lab = lab
        self.agent = agent  # the overlay-agent script to run
        self.procs: list[subprocess.Popen] = []  # nsenter processes, killed by PID at the end
        self.agents: dict[str, int] = {}  # host name -> agent PID (as seen from here)
        self.etcd: LightHost | None = None
        self.url = ""

    # -- etcd ----------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        host = self.etcd = self.lab.add_host("etcd", lan_address(0))
        self.url = f"http://{host.address}:2379"
        peer = f"http://{host.address}:2380"
        with (host.base / "etcd.log").open("wb") as log:
            self.procs.append(host.popen(
                [str(ETCD_BIN), "--name=e", f"--data-dir={host.base / 'etcd-data'}",
                 f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
                 f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                 f"--initial-cluster=e={peer}", "--log-level=error"],
                stdout=log, stderr=log,
            ))  # fmt: skip
        config = json.dumps({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
        wait_for(lambda: self.etcdctl("put", f"{PREFIX}/config", config, check=False), 30,
                 "etcd in the lab answers", interval=0.2)  # fmt: skip

    def etcdctl(self, *args: str, check: bool = True) -> str:
        assert self.etcd is not None
        argv = ["etcdctl", f"--endpoints={self.url}", "--dial-timeout=2s", *args]
        proc = self.etcd.run(argv, timeout=30, check=check)
        return proc.stdout if proc.returncode == 0 else ""

    def etcd_counters(self) -> tuple[dict[str, float], float]:
        """etcd's grpc_server_started_total per method (unary calls and streams opened), and
        its own CPU seconds (nan if it does not say)."""
        assert self.etcd is not None
        text = self.etcd.run(["curl", "-sS", "--max-time", "10", f"{self.url}/metrics"]).stdout
        counts: dict[str, float] = {}
        cpu = float("nan")
        for line in text.splitlines():
            if line.startswith("process_cpu_seconds_total "):
                cpu = float(line.split()[-1])
            if line.startswith("grpc_server_started_total{"):
                method = re.search(r'grpc_method="([^"]+)"', line)
                if method:
                    counts[method.group(1)] = counts.get(method.group(1), 0) + float(
                        line.split()[-1]
                    )
        return counts, cpu

    def leases(self) -> dict[IPv4Network, str]:
        """Subnet -> PublicIP of every lease in etcd."""
        out = self.etcdctl("get", "--prefix", f"{PREFIX}/subnets/").splitlines()
        found: dict[IPv4Network, str] = {}
        for key, value in zip(out[0::2], out[1::2], strict=False):
            found[IPv4Network(key.rsplit("/", 1)[-1].replace("-", "/"))] = json.loads(value)[
                "PublicIP"
            ]
        return found

    # -- agents --------------------------------------------------------------------------------

    def add_hosts(self, count: int) -> list[LightHost]:
        return [self.lab.add_host(f"a{i}", lan_address(i)) for i in range(1, count + 1)]

    def launch(self, host: LightHost) -> subprocess.Popen:
        argv = [
            self.agent, f"--etcd-endpoints={self.url}", "--iface=eth0",
            f"--subnet-file={host.base / 'subnet.env'}",
            f"--docker-opts-file={host.base / 'docker'}", f"--healthz-port={HEALTHZ_PORT}",
        ]  # fmt: skip
        with (host.base / "agent.log").open("wb") as log:
            proc = host.popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def readyz(self, host: LightHost) -> bool:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}/readyz"
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url]
        return host.run(argv, check=False).stdout.strip() == "200"


def subnet_of(host: LightHost) -> IPv4Network | None:
    try:
        text = (host.base / "subnet.env").read_text()
    except OSError:
        return None
    found = re.search(r"^FLANNEL_SUBNET=(\S+)$", text, re.M)
    return IPv4Network(found.group(1), strict=False) if found else None


def ready_at(hosts: list[LightHost], timeout: float) -> dict[str, float]:
    """Host -> wall-clock mtime of its subnet.env, waiting (bounded) until all are written."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(hosts) and time.monotonic() < deadline:
        for host in hosts:
            if host.name not in done:
                with contextlib.suppress(OSError):
                    done[host.name] = (host.base / "subnet.env").stat().st_mtime
        time.sleep(0.05)
    return done


def duplicates(hosts: list[LightHost], leases: dict[IPv4Network, str]) -> list[str]:
    """Every duplicate or mismatch, one line each (must be none)."""
    problems: list[str] = []
    by_ip: dict[str, list[IPv4Network]] = {}
    for subnet, ip in leases.items():
        by_ip.setdefault(ip, []).append(subnet)
    problems += [f"PublicIP {ip} holds {nets}" for ip, nets in by_ip.items() if len(nets) > 1]
    claimed: dict[IPv4Network, list[str]] = {}
    for host in hosts:
        subnet = subnet_of(host)
        if subnet is None:
            continue
        claimed.setdefault(subnet, []).append(host.name)
        if leases.get(subnet) != host.address:
            problems.append(f"{host.name} uses {subnet}, etcd has {leases.get(subnet)}")
    problems += [f"{net} claimed by {names}" for net, names in claimed.items() if len(names) > 1]
    return problems


def log_phases(host: LightHost) -> dict[str, float]:
    """Event -> wall-clock time of its first line in the agent's log (start, config, ready)."""
    found: dict[str, float] = {}
    text = (host.base / "agent.log").read_text(errors="replace")
    for ts, name in re.findall(r"^ts=(\S+) .*? event=(start|config|ready)\b", text, re.M):
        when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        found.setdefault(name, when)
    return found


class LeaseWatch:
    """`etcdctl watch` on the subnets inside the etcd host: when a PublicIP's lease appears."""

    def __init__(self, scale: Scale, public_ip: str) -> None:
        assert scale.etcd is not None
        argv = ["etcdctl", f"--endpoints={scale.url}", "watch", "--prefix", f"{PREFIX}/subnets/"]
        self.proc = scale.etcd.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        scale.procs.append(self.proc)
        self.needle = f'"PublicIP":"{public_ip}"'
        self.seen: float | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if self.seen is None and self.needle in raw.decode(errors="replace"):
                self.seen = time.monotonic()


def measure(args: argparse.Namespace, scale: Scale) -> dict:
    """Start, join, then memory and idle: every figure the report prints."""
    figures = measure_start(args, scale)
    figures.update(measure_join(args, scale, figures.pop("hosts"), figures["ready"]))
    figures.update(measure_idle(args, scale))
    return figures


def measure_start(args: argparse.Namespace, scale: Scale) -> dict:
    n = args.agents
    print(f"scale: {n} light hosts + etcd + 1 joiner on one LAN", flush=True)
    scale.start_etcd()
    setup = time.monotonic()
    hosts = scale.add_hosts(n)
    print(f"scale: {n + 1} light hosts up in {time.monotonic() - setup:.1f} s; "
          f"starting {n} agents at once", flush=True)  # fmt: skip
    before, cpu_before = scale.etcd_counters()
    load = os.getloadavg()[0]
    start_wall = time.time()
    launched = [scale.launch(host) for host in hosts]
    spawn_s = time.time() - start_wall
    ready = ready_at(hosts, args.timeout)
    all_ready = max(ready.values()) - start_wall if len(ready) == n else float("nan")
    ready_times = sorted(t - start_wall for t in ready.values())
    if len(ready) < n:
        print(f"scale: only {len(ready)} of {n} agents ready within {args.timeout} s")
    for host, proc in zip(hosts, launched, strict=True):
        scale.agents[host.name] = child_pid(proc.pid)
    split = [cpu_split(pid) for pid in scale.agents.values()]
    start_cpu = [user + system for user, system in split]
    start_sys = [system for _, system in split]
    phases = [log_phases(h) for h in hosts if h.name in ready]
    imports = [p["start"] - start_wall for p in phases if "start" in p]
    control = [p["ready"] - p["config"] for p in phases if {"ready", "config"} <= p.keys()]
    time.sleep(2)  # let the watches settle before counting
    after, cpu_after = scale.etcd_counters()
    started = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    etcd_cpu = cpu_after - cpu_before  # includes the 2 s settle
    not_ready = [h.name for h in hosts if h.name in ready and not scale.readyz(h)]
    dups = duplicates(hosts, scale.leases())
    return {
        "n": n, "spawn_s": spawn_s, "all_ready": all_ready, "ready_times": ready_times,
        "started": started, "etcd_cpu": etcd_cpu, "not_ready": not_ready, "dups": dups,
        "start_cpu": start_cpu, "start_sys": start_sys, "imports": imports, "control": control,
        "load": load, "hosts": hosts, "ready": ready,
    }  # fmt: skip


def measure_join(
    args: argparse.Namespace, scale: Scale, hosts: list[LightHost], ready: dict[str, float]
) -> dict:
    """One more host joins: when each ready agent has its route."""
    from _routes import RouteWatch  # noqa: PLC0415 - ctypes/netlink only for this part

    joiner = scale.lab.add_host("join", lan_address(len(hosts) + 1))
    watched = {h.name: h.netns for h in hosts if h.name in ready}
    with RouteWatch(watched) as routes:
        lease_watch = LeaseWatch(scale, joiner.address)
        time.sleep(0.5)  # the watch is established
        join_start = time.monotonic()
        scale.launch(joiner)
        wait_for(lambda: subnet_of(joiner), args.timeout, "the joiner's subnet.env")
        subnet = subnet_of(joiner)
        assert subnet is not None
        seen = routes.wait_all(subnet, set(watched), args.route_timeout)
    # t0: the earlier of the lease's arrival in `etcdctl watch` and the joiner's own log line
    # right after its create transaction returned (wall clock, mapped onto our monotonic one).
    acquired = re.search(
        r"^ts=(\S+) .*acquired subnet", (joiner.base / "agent.log").read_text(), re.M
    )
    stamps = [lease_watch.seen] if lease_watch.seen is not None else []
    if acquired:
        wall = datetime.fromisoformat(acquired.group(1).replace("Z", "+00:00")).timestamp()
        stamps.append(wall - time.time() + time.monotonic())
    lease_at = min(stamps, default=float("nan"))
    from_lease = [t - lease_at for t in seen.values()]
    from_start = [t - join_start for t in seen.values()]
    return {
        "lease_s": lease_at - join_start, "from_lease": from_lease, "from_start": from_start,
        "missing": sorted(set(watched) - set(seen)),
    }  # fmt: skip


def measure_idle(args: argparse.Namespace, scale: Scale) -> dict:
    """RSS now, then CPU and etcd calls over ARGS.idle seconds of idle."""
    pids = list(scale.agents.values())
    rss = [proc_status_kb(pid, "VmRSS") / 1024 for pid in pids]
    anon = [proc_status_kb(pid, "RssAnon") / 1024 for pid in pids]
    idle_before, _ = scale.etcd_counters()
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(args.idle)
    cpu = [(cpu_seconds(pid) - cpu0[pid]) / args.idle * 100 for pid in pids]
    idle_after, _ = scale.etcd_counters()
    idle_req = sum(idle_after.values()) - sum(idle_before.values())
    return {"rss": rss, "anon": anon, "cpu": cpu, "idle_req": idle_req}


def report(m: dict, idle: float) -> dict:
    n = m["n"]
    per_agent = sum(m["started"].values()) / n
    ready = m["ready_times"]
    p50, p99 = percentile(m["from_lease"], 50), percentile(m["from_lease"], 99)
    rss_med, rss_max = statistics.median(m["rss"]), max(m["rss"])
    cpu_med = statistics.median(m["start_cpu"])
    print()
    print(f"load average before the start: {m['load']:.1f} on {os.cpu_count()} cores")
    print(f"agents started in {m['spawn_s']:.2f} s (the clock starts before the first one)")
    print(f"per agent until ready: CPU {cpu_med:.2f} s (median, of which system "
          f"{statistics.median(m['start_sys']):.2f} s; {n} agents = "
          f"{cpu_med * n / (os.cpu_count() or 1):.0f} s on {os.cpu_count()} cores); "
          f"process start to first log line p50 {percentile(m['imports'], 50):.2f} s; "
          f"config read to ready p50 {percentile(m['control'], 50):.2f} s, "
          f"max {max(m['control'], default=float('nan')):.2f} s")  # fmt: skip
    print(f"ready: first {ready[0]:.2f} s, median {statistics.median(ready):.2f} s, "
          f"last {ready[-1]:.2f} s; /readyz not 200 after: {m['not_ready'] or 'none'}")  # fmt: skip
    print(f"duplicates: {m['dups'] or 'none'}")
    print("etcd gRPC calls/streams per agent during the start: " + ", ".join(
        f"{k} {v / n:.2f}" for k, v in sorted(m["started"].items()) if v)
        + f"; etcd's own CPU over the start {m['etcd_cpu']:.1f} s")  # fmt: skip
    print(
        f"joiner: lease in etcd {m['lease_s']:.2f} s after its start; routes from the "
        f"joiner's start p50 {percentile(m['from_start'], 50):.3f} s, "
        f"p99 {percentile(m['from_start'], 99):.3f} s; missing on {m['missing'] or 'none'}"
    )
    print(f"RSS median {rss_med:.1f} MB: {statistics.median(m['anon']):.1f} MB anonymous (heap, "
          "stacks), the rest file pages (the interpreter and shared libraries)")  # fmt: skip
    print(
        f"idle {idle:g} s: CPU per agent median {statistics.median(m['cpu']):.2f} %, max "
        f"{max(m['cpu']):.2f} % of one core; etcd calls {m['idle_req'] / n:.2f} per agent"
    )
    print()
    print(goal_rows([
        ("all agents ready", m["all_ready"], "s", GOALS["all_ready_s"]),
        ("duplicates", float(len(m["dups"])), "", 0),
        ("etcd requests per agent (start)", per_agent, "", None),
        ("route after join, p50 (from lease)", p50, "s", None),
        ("route after join, p99 (from lease)", p99, "s", GOALS["route_p99_s"]),
        ("agent RSS median", rss_med, "MB", GOALS["rss_mb"]),
        ("agent RSS max", rss_max, "MB", GOALS["rss_mb"]),
        ("idle CPU per agent, median", statistics.median(m["cpu"]), "%", None),
    ]))  # fmt: skip
    return {
        "agents": n, "all_ready_s": rounded(m["all_ready"], 2), "duplicates": len(m["dups"]),
        "etcd_requests_per_agent": rounded(per_agent, 2), "route_p50_s": rounded(p50),
        "route_p99_s": rounded(p99), "routes_missing": len(m["missing"]),
        "rss_mb": rounded(rss_med, 1), "rss_max_mb": rounded(rss_max, 1),
        "rss_anon_mb": rounded(statistics.median(m["anon"]), 1),
        "idle_cpu_pct": rounded(statistics.median(m["cpu"]), 2),
        "start_cpu_s": rounded(cpu_med, 2), "etcd_start_cpu_s": rounded(m["etcd_cpu"], 1),
        "config_to_ready_p50_s": rounded(
            percentile(m["control"], 50), 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on the ready wait")
    parser.add_argument("--route-timeout", type=float, default=30.0)
    parser.add_argument(
        "--agent-install",
        choices=("host", "dev"),
        default="host",
        help="host: the agent as `overlayctl init` installs it (the host's python3, a venv of the "
        "agent wheelhouse); dev: this checkout's development venv",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not ETCD_BIN:
        print("needs root and an etcd binary", file=sys.stderr)
        return 2
    if not 1 <= args.agents <= 250:
        parser.error("--agents must be 1..250 (one /24 each in a /16 Network)")
    with interrupt_on_sigterm(), tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        agent = DEV_AGENT
        if args.agent_install == "host":
            agent = host_style_agent(Path(work))
        print(f"scale: agent {agent} ({args.agent_install} install)", flush=True)
        lab = LightLab(unique_name("sc"), subnet=str(LAN))
        scale = Scale(lab, agent)
        try:
            result = report(measure(args, scale), args.idle)
        except Timeout as exc:
            print(f"scale: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("scale: interrupted; the lab is removed", file=sys.stderr)
            return 130
        finally:
            lab.close()  # kills every host's PID 1, so etcd and the agents with it
            for proc in scale.procs:
                reap(proc)
    print(json.dumps(result))
    return 0 if result["duplicates"] == 0 and not result["routes_missing"] else 1


if __name__ == "__main__":
    sys.exit(main())
