"""What the agent says about itself: /healthz, /readyz, /metrics and systemd's status line.

A mixin of :class:`agent.daemon.Agent`, apart from the wiring so that each stays readable: these
methods only read the agent's state (set by the daemon's loops) and never change the data
plane. /metrics is built from a snapshot (agent/http/metrics.py AgentStatus), so the HTTP
thread never holds a reference into a loop's objects while formatting.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent.http.server import Metric

if TYPE_CHECKING:
    import threading

    from agent.backends import Backend
    from agent.etcd import EtcdClientBase
    from agent.notify import Notifier
    from agent.rules import RulesKeeper
    from agent.subnet.config import NetworkConfig
    from agent.subnet.lease import LeaseManager
    from agent.subnet.watch import SubnetWatcher


class AgentReport:
    """The reporting half of the agent; the attributes are the daemon's."""

    notifier: Notifier
    phase: str
    detail: str
    lease_held: bool
    dataplane_ok: bool
    files_written: bool
    reacquired: int
    client: EtcdClientBase | None
    config: NetworkConfig | None
    backend: Backend | None
    rules: RulesKeeper | None
    leases: LeaseManager | None
    watcher: SubnetWatcher | None
    stop_event: threading.Event
    _beat: float

    # -- status (HTTP and systemd) -------------------------------------------------------------

    def _phase(self, phase: str, detail: str = "") -> None:
        self.phase, self.detail = phase, detail
        self.notifier.status(f"{phase}: {detail}" if detail else phase)

    def health(self) -> tuple[bool, str]:
        """200 while the loops run (the main loop beats at least every second)."""
        if self.phase == "stopping":
            return False, "stopping"
        stale = self.phase not in ("starting", "waiting-for-config") and (
            time.monotonic() - self._beat > 30
        )
        return (False, "main loop stalled") if stale else (True, "ok")

    def is_ready(self) -> bool:
        """Lease held, data plane programmed and subnet file written."""
        return self.lease_held and self.dataplane_ok and self.files_written

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON reason) for /readyz."""
        missing = [
            name
            for name, ok in (
                ("lease", self.lease_held),
                ("dataplane", self.dataplane_ok),
                ("subnet_file", self.files_written),
            )
            if not ok
        ]
        lease = self.leases.current if self.leases is not None else None
        reason: dict[str, Any] = {
            "ready": not missing,
            "phase": self.phase,
            "waiting_for": missing,
            "subnet": str(lease.subnet) if lease is not None else None,
        }
        refused = self.watcher.refused if self.watcher is not None else []
        if refused:  # leases whose PublicIP the admin's allow-list does not name
            reason["refused"] = [{"subnet": str(x.subnet), "public_ip": str(x.public_ip)}
                                 for x in refused]  # fmt: skip
        if self.detail:
            reason["detail"] = self.detail
        return not missing, reason

    def metrics(self) -> list[Metric]:
        """Every sample for /metrics (agent/http/metrics.py), from a snapshot of our state."""
        from agent.http.metrics import AgentStatus, collect  # noqa: PLC0415 - HTTP thread only

        leases, watcher, backend = self.leases, self.watcher, self.backend
        lease = leases.current if leases is not None else None
        watch_stats = dict(watcher.stats) if watcher is not None else {}
        client_errors = self.client.errors if self.client is not None else 0
        return collect(
            AgentStatus(
                ready=self.is_ready(),
                backend_type=self.config.backend_type if self.config is not None else "",
                etcd_errors=client_errors
                + watch_stats.get("errors", 0)
                + (watcher.allowlist.errors if watcher is not None and watcher.allowlist else 0),
                leases_refused=len(watcher.refused) if watcher is not None else 0,
                iptables_errors=self.rules.errors if self.rules else 0,
                lease_reacquired=self.reacquired,
                lease_expires_at=leases.expires_at
                if leases is not None and lease is not None and not lease.is_reservation
                else None,
                conflicts=tuple(c.kind for c in leases.conflicts) if leases is not None else None,
                peers=len(watcher.peers) if watcher is not None else 0,
                watch_stats=watch_stats,
                backend_stats=backend.stats if backend is not None else None,
            )
        )
