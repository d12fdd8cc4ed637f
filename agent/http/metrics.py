"""What ``/metrics`` reports: the agent's state as Prometheus samples.

Names (all prefixed ``overlay_agent_``): ``info``, ``ready``, ``lease_expiry_timestamp_seconds``,
``lease_seconds_left``, ``lease_reacquired_total``, ``peers``, ``routes_programmed``,
``etcd_errors_total``, ``iptables_errors_total``, ``watch_resyncs_total``, ``watch_events_total``,
``watch_compactions_total``, ``lease_conflicts{kind}``, and ``backend_<stat>`` for each counter
the backend's ``stats()`` returns (e.g. udp packets, bytes, drops; ``*_total`` ones as counters).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from agent import __version__
from agent.http.server import Metric

if TYPE_CHECKING:
    from agent.daemon import Agent

P = "overlay_agent_"
CONFLICT_KINDS = ("duplicate-public-ip", "overlapping-subnets")
ROUTE_STATS = ("routes_programmed", "routes")


def _name(stat: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", stat).strip("_").lower() or "unnamed"


def _lease_metrics(agent: Agent) -> list[Metric]:
    leases = agent.leases
    out = [
        Metric(P + "lease_reacquired_total", agent.reacquired, "Times our lease was lost and "
               "acquired again (same or another subnet).", "counter"),
    ]  # fmt: skip
    if leases is None:
        return out
    lease = leases.current
    expires = leases.expires_at
    if lease is not None and not lease.is_reservation and expires is not None:
        out += [
            Metric(P + "lease_expiry_timestamp_seconds", round(expires, 3),
                   "Unix time our subnet lease expires unless renewed."),
            Metric(P + "lease_seconds_left", max(round(expires - time.time(), 3), 0.0),
                   "Seconds until our subnet lease expires unless renewed."),
        ]  # fmt: skip
    counts = {kind: 0 for kind in CONFLICT_KINDS}
    for conflict in leases.conflicts:
        counts[conflict.kind] = counts.get(conflict.kind, 0) + 1
    help_text = "Conflicts among all leases found by the last self-check."
    out += [
        Metric(P + "lease_conflicts", n, help_text, labels={"kind": kind})
        for kind, n in counts.items()
    ]
    return out


def _watch_metrics(agent: Agent) -> list[Metric]:
    watcher = agent.watcher
    stats = watcher.stats if watcher is not None else {}
    relists = stats.get("relists", 0)
    return [
        Metric(P + "peers", len(watcher.peers) if watcher else 0, "Remote leases known."),
        Metric(P + "watch_resyncs_total", max(relists - 1, 0),
               "Re-lists of the subnets after a broken watch or a compaction.", "counter"),
        Metric(P + "watch_events_total", stats.get("events", 0), "Watch events applied.",
               "counter"),
        Metric(P + "watch_compactions_total", stats.get("compactions", 0),
               "Watches restarted because their revision was compacted.", "counter"),
    ]  # fmt: skip


def _backend_metrics(agent: Agent) -> list[Metric]:
    backend = agent.backend
    if backend is None:
        return []
    try:
        stats = dict(backend.stats())
    except Exception:
        return [Metric(P + "backend_stats_failed", 1, "The backend's stats() raised.")]
    routes = next((stats[k] for k in ROUTE_STATS if k in stats), None)
    out = []
    if routes is not None:
        out.append(Metric(P + "routes_programmed", routes, "Routes to remote subnets programmed."))
    for key, value in sorted(stats.items()):
        name = P + "backend_" + _name(key)
        kind = "counter" if name.endswith("_total") else "gauge"
        out.append(Metric(name, float(value), f"Backend statistic {key}.", kind))
    return out


def collect(agent: Agent) -> list[Metric]:
    """Every sample, computed now."""
    btype = agent.config.backend_type if agent.config is not None else ""
    client = agent.client
    errors = client.errors if client is not None else 0
    if agent.watcher is not None:
        errors += agent.watcher.stats.get("errors", 0)
    return [
        Metric(P + "info", 1, "overlay-agent version and backend.",
               labels={"version": __version__, "backend": btype}),
        Metric(P + "ready", 1 if agent.is_ready() else 0,
               "1 when the lease is held, the data plane programmed and subnet.env written."),
        Metric(P + "etcd_errors_total", errors, "Failed etcd calls and broken watches.",
               "counter"),
        Metric(P + "iptables_errors_total", agent.rules.errors if agent.rules else 0,
               "Failed attempts to program the iptables rules.", "counter"),
        *_lease_metrics(agent),
        *_watch_metrics(agent),
        *_backend_metrics(agent),
    ]  # fmt: skip
