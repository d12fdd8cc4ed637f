"""agent: overlay-agent not active, not ready (/readyz's reason), restarting in a loop
(systemd's NRestarts with a short time since it became active), its own lease expiring soon or
gone from etcd (subnet.env's lease no longer among etcd's leases).

"Expiring soon": the agent renews when --subnet-lease-renew-margin (60 min by default) is left
of the TTL (24 h), and retries a failed renewal every few seconds. A healthy lease therefore
never has much less than the margin left; below half of it the renewal has been failing for
half an hour at least (an error: it lapses within the other half, and peers drop the routes),
below the margin less a 5-minute slack the renewal is late (a warning).
"""

from __future__ import annotations

import json

from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered

CHECK = "agent"
RESTART_LOOP = 3  # restarts with the unit active less than LOOP_WINDOW_S: a loop
LOOP_WINDOW_S = 600
DEFAULT_MARGIN_S = 3600
SLACK_S = 300
LOGS = "journalctl -u overlay-agent -n 50"


def _unit(name: str, f: HostFacts) -> list[Finding]:
    u = f.agent_unit
    if u.get("ActiveState") != "active":
        return [
            Finding(
                name,
                CHECK,
                "error",
                f"overlay-agent is not running ({u.get('ActiveState', 'no unit')}"
                f"/{u.get('SubState', '')}, result {u.get('Result', '?')})",
                f"systemctl show overlay-agent: {u}",
                f"systemctl start overlay-agent; {LOGS}",
                hop=name,
            )
        ]
    found = []
    restarts = int(u.get("NRestarts", "0") or 0)
    since = None
    if f.uptime and u.get("ActiveEnterTimestampMonotonic", "0").isdigit():
        since = f.uptime - int(u["ActiveEnterTimestampMonotonic"]) / 1e6
    if restarts >= RESTART_LOOP and since is not None and since < LOOP_WINDOW_S:
        found.append(
            Finding(
                name,
                CHECK,
                "error",
                f"overlay-agent is restarting in a loop "
                f"({restarts} restarts, up for {since:.0f} s)",
                f"NRestarts={restarts}",
                f"{LOGS} (why it exits)",
                hop=name,
            )
        )
    ready = f.readyz
    if ready.get("status") != 200:
        reason = ready.get("body") or ready.get("error") or ""
        try:
            doc = json.loads(reason)
            reason = f"waiting for {', '.join(doc.get('waiting_for', []))}: {doc.get('detail', '')}"
        except (ValueError, AttributeError):
            pass
        found.append(
            Finding(
                name,
                CHECK,
                "error",
                f"overlay-agent is not ready: {reason.strip()}",
                f"GET /readyz -> {ready.get('status')}: {ready.get('body', '')[:300]}",
                LOGS,
                hop=name,
            )
        )
    return found


def _lease(ctx: Context, name: str, f: HostFacts) -> list[Finding]:
    if not ctx.leases_known or f.subnet is None:
        return []
    own = str(f.subnet.network)
    lease = next((x for x in ctx.leases if x.subnet == own and not x.error), None)
    if lease is None:
        return [
            Finding(
                name,
                CHECK,
                "error",
                f"its lease {own} (subnet.env) is not in etcd any more: "
                "peers have dropped their routes to it",
                f"FLANNEL_SUBNET={f.subnet}",
                "systemctl restart overlay-agent (it leases a subnet again)",
                hop=name,
            )
        ]
    margin = int(f.agent_options.get("subnet-lease-renew-margin", 0) or 0) * 60 or DEFAULT_MARGIN_S
    left = lease.expires_in_s
    if left is None or left >= margin - SLACK_S:
        return []
    severity = "error" if left < margin / 2 else "warning"
    return [
        Finding(
            name,
            CHECK,
            severity,
            f"its lease {own} expires in {left} s: the agent renews "
            f"when {margin} s are left, so renewals are failing",
            f"etcd: {own} TTL {left} s; renew margin {margin} s",
            f"{LOGS} (etcd errors); systemctl restart overlay-agent",
            hop=name,
        )
    ]


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        found += _unit(name, f)
        found += _lease(ctx, name, f)
    return found
