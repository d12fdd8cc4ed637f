"""The parts of benchmarks/scale.py that read the hosts or act past the start: subnet.env and
the agents' logs, duplicates, a full network, one agent's own start, etcd restarted under every
agent, and the routes each host holds.

Kept apart so scale.py stays the measurement of the start and the report. Each function takes
the running :class:`scale.Scale` and returns plain figures; none of them leaves anything
running that the lab's close does not remove.
"""

from __future__ import annotations

import re
import signal
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, TypeVar

from _lab import alive, child_pid, kill_pid, wait_for

if TYPE_CHECKING:
    from scale import Scale

    from overlayctl.lab.light import LightHost

T = TypeVar("T")

READY_LINE = re.compile(r"^ts=(\S+) .*? event=ready\b", re.M)
RESYNCS = re.compile(r"^overlay_agent_watch_resyncs_total (\d+)", re.M)


def subnet_of(host: LightHost) -> IPv4Network | None:
    try:
        text = (host.base / "subnet.env").read_text()
    except OSError:
        return None
    found = re.search(r"^FLANNEL_SUBNET=(\S+)$", text, re.M)
    return IPv4Network(found.group(1), strict=False) if found else None


def agent_log(host: LightHost) -> str:
    """HOST's agent log so far ("" before it exists)."""
    try:
        return (host.base / "agent.log").read_text(errors="replace")
    except OSError:
        return ""


def poll_hosts(
    hosts: list[LightHost], probe: Callable[[LightHost], T | None], timeout: float
) -> dict[str, T]:
    """Host -> PROBE's first answer other than None, asking (bounded by TIMEOUT) until every
    host answered."""
    done: dict[str, T] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(hosts) and time.monotonic() < deadline:
        for host in hosts:
            if host.name not in done and (found := probe(host)) is not None:
                done[host.name] = found
        time.sleep(0.05)
    return done


def ready_at(hosts: list[LightHost], timeout: float) -> dict[str, float]:
    """Host -> wall-clock mtime of its subnet.env, waiting (bounded) until all are written."""

    def written(host: LightHost) -> float | None:
        try:
            return (host.base / "subnet.env").stat().st_mtime
        except OSError:
            return None

    return poll_hosts(hosts, written, timeout)


def waiting_for_config(hosts: list[LightHost], timeout: float) -> int:
    """Wait (bounded) until every agent logged that it waits for the config; how many did."""
    line = "waiting for the network config"
    return len(poll_hosts(hosts, lambda h: True if line in agent_log(h) else None, timeout))


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


def log_time(stamp: str) -> float:
    """An agent log line's ts= as wall-clock seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def peer_routes(scale: Scale, host: LightHost) -> int:
    """Routes to the overlay's subnets on HOST (host-gw: one per peer)."""
    network = IPv4Network(scale.network)
    out = host.run(["ip", "-4", "route", "show"], check=False).stdout
    dsts = [line.split()[0] for line in out.splitlines() if line.split()]
    return sum(1 for dst in dsts if "/" in dst and IPv4Network(dst).subnet_of(network))


def routes_short(scale: Scale, hosts: list[LightHost], expected: int) -> list[str]:
    """Hosts holding fewer (or more) than EXPECTED peer routes, with their count."""
    wrong = []
    for host in hosts:
        count = peer_routes(scale, host)
        if count != expected:
            wrong.append(f"{host.name}: {count}")
    return wrong


def full_network(scale: Scale, extra: LightHost, victim: LightHost, timeout: float) -> dict:
    """The network is full: EXTRA's agent must fail fast with one clear line, retry at a
    bounded rate, and become ready once VICTIM's agent is killed and its lease deleted."""
    leased = len(scale.leases())
    line = f"no free subnet in {scale.network} ({leased} leased)"
    launched = time.monotonic()
    scale.launch(extra)
    try:
        wait_for(lambda: line in agent_log(extra), timeout, f"'{line}'")
        failed_after = time.monotonic() - launched
    except Exception:
        tail = agent_log(extra).splitlines()[-3:]
        return {"ok": False, "why": f"no '{line}' within {timeout} s: {tail}"}
    time.sleep(5.0)
    attempts = agent_log(extra).count("no free subnet in")
    kill_pid(scale.agents.pop(victim.name), signal.SIGKILL)
    subnet = next((s for s, ip in scale.leases().items() if ip == victim.address), None)
    freed = time.monotonic()
    if subnet is not None:
        scale.etcdctl("del", f"{scale.prefix}/subnets/{subnet.network_address}-{subnet.prefixlen}")
    try:
        wait_for((extra.base / "subnet.env").exists, timeout, "the extra agent's lease")
        ready_after = time.monotonic() - freed
    except Exception:
        return {"ok": False, "why": "not ready after a lease was freed", "attempts": attempts}
    # Bounded rate: 1, 2, 4 ... s apart: at most 4 attempts in the first 5 s after the error.
    ok = subnet is not None and attempts <= 4 and failed_after < 5.0 and ready_after < 5.0
    return {
        "ok": ok, "line": line, "failed_after_s": failed_after, "attempts_5s": attempts,
        "ready_after_free_s": ready_after,
    }  # fmt: skip


def exec_to_ready(scale: Scale, host: LightHost, runs: int, timeout: float) -> list[float]:
    """HOST's agent stopped, then started RUNS times on its own (the rest idle): from the
    exec to its 'ready' log line, each run with its lease already held (a restart)."""
    times: list[float] = []
    pid = scale.agents.pop(host.name, None)
    kill_pid(pid, signal.SIGTERM)
    if pid is not None:
        wait_for(lambda: not alive(pid), 10, f"{host.name}'s agent to stop")
    for run in range(runs):
        (host.base / "agent.log").unlink(missing_ok=True)
        started = time.time()
        proc = scale.launch(host)
        found = wait_for(
            lambda: READY_LINE.search(agent_log(host)),
            timeout,
            f"{host.name}'s agent ready",
        )
        times.append(log_time(found.group(1)) - started)
        agent = child_pid(proc.pid)
        if run == runs - 1:
            scale.agents[host.name] = agent  # the last one keeps running
            break
        kill_pid(agent, signal.SIGTERM)
        wait_for(lambda a=agent: not alive(a), 10, f"{host.name}'s agent to stop")
    return times


def etcd_restart(scale: Scale, hosts: list[LightHost], settle: float) -> dict:
    """etcd killed and started again under every agent: each agent re-reads at most once,
    every route stays, no lease is lost."""
    before = {str(k): v for k, v in scale.leases_with_ids().items()}
    routes_before = {h.name: peer_routes(scale, h) for h in hosts}
    down = time.monotonic()
    scale.restart_etcd()
    back = time.monotonic() - down
    time.sleep(settle)  # every watch reconnects and re-reads
    resyncs = [scale.metric(h, RESYNCS) for h in hosts]
    after = {str(k): v for k, v in scale.leases_with_ids().items()}
    routes_lost = [h.name for h in hosts if peer_routes(scale, h) < routes_before[h.name]]
    known = [r for r in resyncs if r is not None]
    return {
        "back_s": back,
        "resyncs_max": max(known, default=-1),
        "resyncs_median": statistics.median(known) if known else -1,
        "unanswered": len(resyncs) - len(known),
        "leases_lost": sorted(set(before) - set(after)),
        "leases_changed": sorted(k for k in before if k in after and before[k] != after[k]),
        "routes_lost": routes_lost,
    }
