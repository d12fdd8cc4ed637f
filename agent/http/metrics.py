"""What ``/metrics`` reports: the agent's state as Prometheus samples.

Names (all prefixed ``overlay_agent_``): ``info``, ``ready``, ``lease_expiry_timestamp_seconds``,
``lease_seconds_left``, ``lease_reacquired_total``, ``peers``, ``leases_refused``,
``routes_programmed``,
``etcd_errors_total``, ``iptables_errors_total``, ``watch_resyncs_total``, ``watch_events_total``,
``watch_compactions_total``, ``lease_conflicts{kind}``, and ``backend_<stat>`` for each counter
the backend's ``stats()`` returns (e.g. udp packets, bytes, drops; ``*_total`` ones as counters).

It reads one :class:`AgentStatus`, plain values the daemon copies off its parts at scrape time,
never the daemon itself: the HTTP layer sits below the daemon and cannot reach back into it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent import __version__
from agent.http.server import Metric

P = "overlay_agent_"
CONFLICT_KINDS = ("duplicate-public-ip", "overlapping-subnets")
ROUTE_STATS = ("routes_programmed", "routes")


@dataclass(frozen=True)
class AgentStatus:
    """What /metrics reports, as the daemon sees it at one scrape.

    ``conflicts`` is None until the lease manager exists (then no lease or conflict samples);
    ``lease_expires_at`` is None without a lease or for a reservation (no TTL);
    ``backend_stats`` is the backend's ``stats`` (called here, so its failure is reported).
    """

    ready: bool
    backend_type: str = ""
    etcd_errors: int = 0
    iptables_errors: int = 0
    lease_reacquired: int = 0
    lease_expires_at: float | None = None
    conflicts: tuple[str, ...] | None = None  # the kind of each conflict
    peers: int = 0
    leases_refused: int = 0
    watch_stats: Mapping[str, float] = field(default_factory=dict)
    backend_stats: Callable[[], Mapping[str, float]] | None = None


def _name(stat: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", stat).strip("_").lower() or "unnamed"


def _lease_metrics(status: AgentStatus) -> list[Metric]:
    out = [
        Metric(P + "lease_reacquired_total", status.lease_reacquired, "Times our lease was lost "
               "and acquired again (same or another subnet).", "counter"),
    ]  # fmt: skip
    if status.conflicts is None:
        return out
    expires = status.lease_expires_at
    if expires is not None:
        out += [
            Metric(P + "lease_expiry_timestamp_seconds", round(expires, 3),
                   "Unix time our subnet lease expires unless renewed."),
            Metric(P + "lease_seconds_left", max(round(expires - time.time(), 3), 0.0),
                   "Seconds until our subnet lease expires unless renewed."),
        ]  # fmt: skip
    counts = {kind: 0 for kind in CONFLICT_KINDS}
    for kind in status.conflicts:
        counts[kind] = counts.get(kind, 0) + 1
    help_text = "Conflicts among all leases found by the last self-check."
    out += [
        Metric(P + "lease_conflicts", n, help_text, labels={"kind": kind})
        for kind, n in counts.items()
    ]
    return out


def _watch_metrics(status: AgentStatus) -> list[Metric]:
    stats = status.watch_stats
    return [
        Metric(P + "peers", status.peers, "Remote leases known."),
        Metric(P + "leases_refused", status.leases_refused, "Remote leases ignored: their "
               "PublicIP is not in <prefix>/allowed-public-ips."),
        Metric(P + "watch_resyncs_total", stats.get("relists", 0),
               "Re-lists of the subnets after a broken watch or a compaction.", "counter"),
        Metric(P + "watch_events_total", stats.get("events", 0), "Watch events applied.",
               "counter"),
        Metric(P + "watch_compactions_total", stats.get("compactions", 0),
               "Watches restarted because their revision was compacted.", "counter"),
    ]  # fmt: skip


def _backend_metrics(status: AgentStatus) -> list[Metric]:
    if status.backend_stats is None:
        return []
    try:
        stats = dict(status.backend_stats())
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


def collect(status: AgentStatus) -> list[Metric]:
    """Every sample, computed now."""
    return [
        Metric(P + "info", 1, "overlay-agent version and backend.",
               labels={"version": __version__, "backend": status.backend_type}),
        Metric(P + "ready", 1 if status.ready else 0,
               "1 when the lease is held, the data plane programmed and subnet.env written."),
        Metric(P + "etcd_errors_total", status.etcd_errors,
               "Failed etcd calls and broken watches.", "counter"),
        Metric(P + "iptables_errors_total", status.iptables_errors,
               "Failed attempts to program the iptables rules.", "counter"),
        *_lease_metrics(status),
        *_watch_metrics(status),
        *_backend_metrics(status),
    ]  # fmt: skip
