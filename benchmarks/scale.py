"""Scale: N real overlay-agents (host-gw) on N light lab hosts against one real etcd.

One light lab (see overlayctl.lab.light): etcd in its own light host, one light host per agent,
all on one LAN (10.240.0.0/16, so any N up to a few thousand fits). The host-gw backend: it is
the cheapest per host (no device, one route per peer), so the figures show the agent and etcd,
not VXLAN devices; the control plane (lease, watch, routes) is the same for every backend. The
network is the runbook's 172.21.0.0/16 with SubnetLen 24: 255 subnets, so 255 agents fill it.

What users feel is the control plane, so that is what is measured (aggregate start-up CPU of N
interpreters on one 2-core machine is reported, not a goal: in production each host runs one):
1. N-1 agents started at once with no network config; once every one waits for it, the config
   is written -> config-to-ready: until every agent is ready (the mtime of its subnet.env,
   written just before /readyz turns 200); etcd's requests (its own gRPC counters,
   grpc_server_started_total) and CPU from the config's write until all are ready: the
   requests of a start (the wait before the config is not counted);
2. duplicates, from etcd: a PublicIP holding more than one subnet, a subnet claimed in
   subnet.env by more than one host, or a subnet.env not matching the etcd lease of its host;
3. the Nth host joins -> time until each agent has a route to its subnet, from the moment its
   lease appears in etcd (an `etcdctl watch` in the etcd host) and from the joiner's start;
   route additions are stamped by rtnetlink sockets in every host (benchmarks/_routes.py);
   then every host must hold N-1 peer routes;
4. with N = 255 (the network full): a 256th agent must fail fast with `no free subnet in
   172.21.0.0/16 (255 leased)`, retry at a bounded rate, and become ready when an agent is
   killed and its lease deleted (benchmarks/_scale_checks.py);
5. one agent's exec-to-READY on its own (the joiner restarted 10 times, the rest idle);
6. RSS (VmRSS) per agent, CPU per agent and etcd requests over ARGS.idle seconds of idle;
7. etcd restarted under every agent: re-reads per agent (the agents' watch_resyncs_total),
   routes and leases kept.
``--series 25,50,100,255`` runs each size in a fresh lab and prints the growth side by side.

Everything lives in the lab's namespaces; processes are killed by PID and the lab is closed
(host PID 1s killed, namespaces deleted) on any exit, Ctrl-C and SIGTERM included. Usage (root):

    .venv/bin/python benchmarks/scale.py [--agents 100 | --series 25,50,100,255] [--idle 60]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from ipaddress import IPv4Network
from pathlib import Path

import _scale_checks as checks
from _lab import (  # sets sys.path for the imports below
    Timeout,
    child_pid,
    cpu_seconds,
    cpu_split,
    host_style_agent,
    interrupt_on_sigterm,
    proc_status_kb,
    reap,
    stop_pid,
    wait_for,
)
from _scale_checks import duplicates, ready_at, subnet_of, waiting_for_config
from _scale_report import report

from overlayctl.lab.light import LightHost, LightLab
from tests.conftest import unique_name
from tests.integration.conftest import ETCD_BIN

DEV_AGENT = str(Path(sys.executable).parent / "overlay-agent")
PREFIX = "/coreos.com/network"
NETWORK = "172.21.0.0/16"
CAPACITY = 255  # /24 subnets in the /16 between flannel's default SubnetMin and SubnetMax
LAN = IPv4Network("10.240.0.0/16")
HEALTHZ_PORT = 8471


def lan_address(index: int) -> str:
    """The LAN address of host INDEX (0 is etcd): 10.240.0.10, .11, ..."""
    return str(LAN.network_address + 10 + index)


class Scale:
    """The lab, etcd, the agents and what was measured on them."""

    def __init__(self, lab: LightLab, agent: str) -> None:
        self.lab = lab
        self.agent = agent  # the overlay-agent script to run
        self.extra_args: list[str] = []  # --agent-arg: experiments (what costs what)
        self.network = NETWORK
        self.prefix = PREFIX
        self.procs: list[subprocess.Popen] = []  # nsenter processes, killed by PID at the end
        self.agents: dict[str, int] = {}  # host name -> agent PID (as seen from here)
        self.etcd: LightHost | None = None
        self.etcd_proc: subprocess.Popen | None = None
        self.url = ""

    # -- etcd ----------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        host = self.etcd = self.lab.add_host("etcd", lan_address(0))
        self.url = f"http://{host.address}:2379"
        self._run_etcd()

    def _run_etcd(self) -> None:
        host = self.etcd
        assert host is not None
        peer = f"http://{host.address}:2380"
        with (host.base / "etcd.log").open("ab") as log:
            self.etcd_proc = host.popen(
                [str(ETCD_BIN), "--name=e", f"--data-dir={host.base / 'etcd-data'}",
                 f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
                 f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                 f"--initial-cluster=e={peer}", "--log-level=error"],
                stdout=log, stderr=log,
            )  # fmt: skip
        self.procs.append(self.etcd_proc)
        wait_for(self.answers, 60, "etcd in the lab answers", interval=0.2)

    def answers(self) -> bool:
        assert self.etcd is not None
        argv = ["etcdctl", f"--endpoints={self.url}", "--dial-timeout=2s", "get", "probe"]
        return self.etcd.run(argv, timeout=30, check=False).returncode == 0

    def restart_etcd(self) -> None:
        """Stop etcd (SIGTERM, as systemd would) and start it again on the same data."""
        assert self.etcd_proc is not None
        stop_pid(child_pid(self.etcd_proc.pid))  # gone before the new one binds its ports
        reap(self.etcd_proc, timeout=10)
        self._run_etcd()

    def write_config(self) -> None:
        config = json.dumps({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
        self.etcdctl("put", f"{PREFIX}/config", config)

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

    def leases_with_ids(self) -> dict[IPv4Network, tuple[str, str]]:
        """Subnet -> (PublicIP, etcd lease id) of every lease in etcd."""
        out = self.etcdctl("get", "--prefix", "-w", "json", f"{PREFIX}/subnets/")
        found: dict[IPv4Network, tuple[str, str]] = {}
        for kv in json.loads(out or "{}").get("kvs") or []:
            key = base64.b64decode(kv["key"]).decode()
            value = json.loads(base64.b64decode(kv["value"]))
            net = IPv4Network(key.rsplit("/", 1)[-1].replace("-", "/"))
            found[net] = (value["PublicIP"], str(kv.get("lease", 0)))
        return found

    def leases(self) -> dict[IPv4Network, str]:
        """Subnet -> PublicIP of every lease in etcd."""
        return {net: ip for net, (ip, _) in self.leases_with_ids().items()}

    # -- agents --------------------------------------------------------------------------------

    def add_hosts(self, first: int, count: int) -> list[LightHost]:
        return [self.lab.add_host(f"a{i}", lan_address(i)) for i in range(first, first + count)]

    def launch(self, host: LightHost) -> subprocess.Popen:
        argv = [
            self.agent, f"--etcd-endpoints={self.url}", "--iface=eth0",
            f"--subnet-file={host.base / 'subnet.env'}",
            f"--docker-opts-file={host.base / 'docker'}", f"--healthz-port={HEALTHZ_PORT}",
            *self.extra_args,
        ]  # fmt: skip
        with (host.base / "agent.log").open("ab") as log:
            proc = host.popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def _curl(self, host: LightHost, path: str) -> subprocess.CompletedProcess[str]:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}{path}"
        return host.run(["curl", "-s", "--max-time", "3", url], check=False)

    def readyz(self, host: LightHost) -> bool:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}/readyz"
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url]
        return host.run(argv, check=False).stdout.strip() == "200"

    def metric(self, host: LightHost, pattern: re.Pattern[str]) -> int | None:
        """One integer from HOST's agent's /metrics (None if it does not answer)."""
        found = pattern.search(self._curl(host, "/metrics").stdout)
        return int(found.group(1)) if found else None


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


def measure_start(args: argparse.Namespace, scale: Scale, hosts: list[LightHost]) -> dict:
    """N-1 agents at once; once all wait for the config, it is written: config-to-ready."""
    n = len(hosts)
    start_wall = time.time()
    launched = [scale.launch(host) for host in hosts]
    spawn_s = time.time() - start_wall
    waiting = waiting_for_config(hosts, args.timeout)
    waited_s = time.time() - start_wall
    for host, proc in zip(hosts, launched, strict=True):
        scale.agents[host.name] = child_pid(proc.pid)
    time.sleep(1.0)  # every agent's config watch is in place (it follows its first read)
    before, cpu_before = scale.etcd_counters()
    agents_cpu = {pid: cpu_seconds(pid) for pid in scale.agents.values()}
    config_wall = time.time()
    scale.write_config()
    ready = ready_at(hosts, args.timeout)
    config_to_ready = max(ready.values()) - config_wall if len(ready) == n else float("nan")
    if len(ready) < n:
        print(f"scale: only {len(ready)} of {n} agents ready within {args.timeout} s")
    after, cpu_after = scale.etcd_counters()  # before the watches' events settle: the start
    agents_cpu_s = sum(cpu_seconds(pid) - cpu for pid, cpu in agents_cpu.items())
    started = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    started["Put"] = started.get("Put", 0) - 1  # our own write of the config is not theirs
    split = [cpu_split(pid) for pid in scale.agents.values()]
    not_ready = [h.name for h in hosts if h.name in ready and not scale.readyz(h)]
    return {
        "spawn_s": spawn_s, "waiting": waiting, "waited_s": waited_s,
        "config_to_ready": config_to_ready, "ready_times": sorted(t - config_wall for t in
                                                                  ready.values()),
        "started": started, "etcd_cpu": cpu_after - cpu_before, "not_ready": not_ready,
        "agents_cpu": agents_cpu_s,
        "dups": duplicates(hosts, scale.leases()), "ready": ready,
        "start_cpu": [u + s for u, s in split], "load": os.getloadavg()[0],
    }  # fmt: skip


def measure_join(args: argparse.Namespace, scale: Scale, joiner: LightHost, watched: dict) -> dict:
    """One more host joins: when each ready agent has its route."""
    from _routes import RouteWatch  # noqa: PLC0415 - ctypes/netlink only for this part

    with RouteWatch(watched) as routes:
        lease_watch = LeaseWatch(scale, joiner.address)
        time.sleep(0.5)  # the watch is established
        join_start = time.monotonic()
        proc = scale.launch(joiner)
        wait_for(lambda: subnet_of(joiner), args.timeout, "the joiner's subnet.env")
        subnet = subnet_of(joiner)
        assert subnet is not None
        seen = routes.wait_all(subnet, set(watched), args.route_timeout)
    scale.agents[joiner.name] = child_pid(proc.pid)
    # t0: the earlier of the lease's arrival in `etcdctl watch` and the joiner's own log line
    # right after its create transaction returned (wall clock, mapped onto our monotonic one).
    acquired = re.search(r"^ts=(\S+) .*acquired subnet", checks.agent_log(joiner), re.M)
    stamps = [lease_watch.seen] if lease_watch.seen is not None else []
    if acquired:
        wall = datetime.fromisoformat(acquired.group(1).replace("Z", "+00:00")).timestamp()
        stamps.append(wall - time.time() + time.monotonic())
    lease_at = min(stamps, default=float("nan"))
    return {
        "lease_s": lease_at - join_start, "from_lease": [t - lease_at for t in seen.values()],
        "from_start": [t - join_start for t in seen.values()],
        "missing": sorted(set(watched) - set(seen)),
    }  # fmt: skip


def measure_idle(args: argparse.Namespace, scale: Scale) -> dict:
    """RSS now, then CPU and etcd calls over ARGS.idle seconds of idle."""
    pids = list(scale.agents.values())
    rss = [proc_status_kb(pid, "VmRSS") / 1024 for pid in pids]
    idle_before, _ = scale.etcd_counters()
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(args.idle)
    cpu = [(cpu_seconds(pid) - cpu0[pid]) / args.idle * 100 for pid in pids]
    idle_after, _ = scale.etcd_counters()
    idle_req = sum(idle_after.values()) - sum(idle_before.values())
    return {"rss": rss, "cpu": cpu, "idle_per_min": idle_req / len(pids) / (args.idle / 60)}


def run_size(args: argparse.Namespace, agent: str, n: int) -> dict:
    """Every measurement at N agents, in a fresh lab (closed on any exit)."""
    lab = LightLab(unique_name("sc"), subnet=str(LAN))
    scale = Scale(lab, agent)
    scale.extra_args = list(args.agent_arg)
    try:
        print(f"scale: {n} agents: {n - 1} at once, then 1 joining", flush=True)
        scale.start_etcd()
        hosts = scale.add_hosts(1, n - 1)
        joiner = scale.lab.add_host(f"a{n}", lan_address(n))
        m = measure_start(args, scale, hosts)
        print(f"scale: config to ready {m['config_to_ready']:.2f} s", flush=True)
        m.update(measure_join(args, scale, joiner, {h.name: h.netns for h in hosts}))
        every = [*hosts, joiner]
        m["routes_wrong"] = checks.routes_short(scale, every, n - 1)
        if n == CAPACITY:
            extra = scale.lab.add_host(f"a{n + 1}", lan_address(n + 1))
            m["full"] = checks.full_network(scale, extra, hosts[0], args.timeout)
            print(f"scale: full network: {m['full']}", flush=True)
            every = [*hosts[1:], joiner, extra]
        m["exec_to_ready"] = checks.exec_to_ready(scale, joiner, args.exec_runs, args.timeout)
        m.update(measure_idle(args, scale))
        m["restart"] = checks.etcd_restart(scale, every, args.restart_settle)
        print(f"scale: etcd restart: {m['restart']}", flush=True)
        m["n"] = n
        return m
    finally:
        lab.close()  # kills every host's PID 1, so etcd and the agents with it
        for proc in scale.procs:
            reap(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents in all (2..255)")
    parser.add_argument("--series", help="sizes to run one after another, e.g. 25,50,100,255")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle sampling")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on each wait")
    parser.add_argument("--route-timeout", type=float, default=30.0)
    parser.add_argument("--exec-runs", type=int, default=10)
    parser.add_argument("--agent-arg", action="append", default=[], help="one more agent option")
    parser.add_argument("--restart-settle", type=float, default=10.0)
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
    sizes = [int(x) for x in args.series.split(",")] if args.series else [args.agents]
    if not all(2 <= n <= CAPACITY for n in sizes):
        parser.error(f"sizes must be 2..{CAPACITY} (one /24 each in a /16 Network)")
    runs: list[dict] = []
    with interrupt_on_sigterm(), tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        agent = DEV_AGENT
        if args.agent_install == "host":
            agent = host_style_agent(Path(work))
        print(f"scale: agent {agent} ({args.agent_install} install)", flush=True)
        try:
            runs = [run_size(args, agent, n) for n in sizes]
        except Timeout as exc:
            print(f"scale: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("scale: interrupted; the lab is removed", file=sys.stderr)
            return 130
    result = report(runs)
    print(json.dumps(result))
    bad = result["duplicates"] or result["routes_missing"] or result["peer_routes_wrong"]
    return 1 if bad or result["full_network_error_ok"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
