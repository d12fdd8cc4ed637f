"""Presentation: plan diffs, status tables and JSON. No decisions, no I/O: text out.

Every text and table goes through text.printable on its way out: what etcd or a host says (a
lease's BackendType, an error, a file's old content in a diff) reaches the operator's terminal
as characters, never as a control sequence. The JSON documents are left exact (json.dumps
escapes control characters itself).
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from overlayctl.actions.status import HostStatus
from overlayctl.actions.verify import PairResult, VerifyReport, rounds_to_cover
from overlayctl.etcd.cluster import ClusterStatus, LeaseInfo
from overlayctl.plan.changes import HostPlan
from overlayctl.text import plural, printable


def plan_text(plans: dict[str, HostPlan], cluster: str = "") -> str:
    """Per host its diffs and actions; CLUSTER: what changes for the cluster as a whole."""
    out = [f"=== cluster: {cluster}"] if cluster else []
    for name in sorted(plans):
        plan = plans[name]
        out.append(f"=== {name}: {plural(plan.changes, 'change')}")
        for change in plan.files:
            out.append(f"--- {change.phase}: {change.kind} {change.path}")
            out.append(change.diff().rstrip("\n"))
        for action in plan.actions:
            out.append(f"--- {action.phase}: {action}")
    return printable("\n".join(out))


def plan_doc(
    plans: dict[str, HostPlan], network_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`plan -o json`: the total, per host its file changes (diffs) and actions, and the network
    config's replacement when etcd holds another one ({"current", "desired", "describe"})."""
    hosts = {
        name: {
            "changes": plan.changes,
            "files": [
                {"phase": c.phase, "path": c.path, "kind": c.kind, "diff": c.diff()}
                for c in plan.files
            ],
            "actions": [
                {"phase": a.phase, "kind": a.kind, "target": a.target} for a in plan.actions
            ],
        }
        for name, plan in sorted(plans.items())
    }
    total = sum(p.changes for p in plans.values()) + (network_config is not None)
    return {"changes": total, "hosts": hosts, "network_config": network_config}


def status_doc(status: ClusterStatus, hosts: list[HostStatus]) -> dict[str, Any]:
    return {
        "healthy": status.healthy and all(h.healthy for h in hosts),
        "etcd": {
            "healthy": status.healthy,
            "state": status.verdict,  # healthy | degraded (quorum held) | unavailable
            "quorum": status.quorum,
            "members": [
                {"name": m.name, "peer_urls": m.peer_urls, "client_urls": m.client_urls,
                 "leader": m.leader, "healthy": m.healthy, "db_size": m.db_size,
                 "version": m.version, "error": m.error}
                for m in status.members
            ],
            "unreachable": status.unreachable,
            "errors": status.errors,
        },
        "network_config": status.network_config,
        # null: unknown, etcd did not answer (an empty list means there are none)
        "leases": None if status.errors else [
            {"subnet": lease.subnet, "host": lease.host, "public_ip": lease.public_ip,
             "backend": lease.backend, "expires_in_s": lease.expires_in_s,
             "reservation": lease.reservation, "stale": lease.host is None and not lease.error,
             "error": lease.error}
            for lease in status.leases
        ],
        "hosts": [
            {"name": h.name, "agent_active": h.agent_active, "agent_ready": h.agent_ready,
             "docker_active": h.docker_active,
             "lease": h.lease, "docker0": h.docker0, "bip_ok": h.bip_ok, "mtu": h.mtu,
             "missing_routes": h.missing_routes, "missing_fdb": h.missing_fdb,
             "lease_in_etcd": h.lease_in_etcd, "error": h.error}
            for h in hosts
        ],
    }  # fmt: skip


def _cells(rows: list[list[Any]]) -> list[list[Any]]:
    """Table rows with every text cell printable on one line (numbers stay numbers)."""
    return [[printable(c, lines=False) if isinstance(c, str) else c for c in row] for row in rows]


def status_text(status: ClusterStatus, hosts: list[HostStatus]) -> str:
    """The members, the network config, the leases and the hosts, as tables."""
    return printable(_status_text(status, hosts))


def _status_text(status: ClusterStatus, hosts: list[HostStatus]) -> str:
    rows = [
        [m.name, "yes" if m.healthy else "NO", "*" if m.leader else "",
         ",".join(m.client_urls), _size(m.db_size), m.version, m.error if not m.healthy else ""]
        for m in status.members
    ]  # fmt: skip
    rows += [[name, "NO", "", "", "", "", "unreachable"] for name in status.unreachable]
    table = tabulate(
        _cells(rows),
        headers=["member", "healthy", "leader", "client urls", "db", "version", "error"],
    )
    healthy = sum(m.healthy for m in status.members)
    total = len(status.members) + len(status.unreachable)  # members etcd could not even list
    verdict = {
        "healthy": "healthy",
        "degraded": f"DEGRADED: quorum held, {healthy} of {total} members healthy",
        "unavailable": f"UNAVAILABLE: no quorum, {healthy} of {total} healthy",
    }[status.verdict]
    if status.errors:
        config = "(unknown: etcd did not answer)"
    else:
        raw = status.network_config_raw
        config = printable(raw, lines=False) if raw is not None else "(absent)"
    text = f"etcd: {verdict}\n{table}\n\nnetwork config: {config}"
    text += "".join(f"\netcd error: {e}" for e in status.errors)
    if status.errors:
        text += "\n\nleases: (unknown: etcd did not answer)"
    elif status.leases:
        rows = [[lease.subnet, _lease_host(lease), lease.public_ip, lease.backend,
                 _expires(lease.expires_in_s), "yes" if lease.reservation else "", lease.error]
                for lease in status.leases]  # fmt: skip
        text += "\n\n" + tabulate(
            _cells(rows),
            headers=["lease", "host", "public ip", "backend", "expires in", "reservation", "error"],
        )
    if hosts:
        rows = [[h.name, _yes(h.agent_active), _yes(h.agent_ready), _yes(h.docker_active),
                 h.lease, h.docker0,
                 _yes(h.bip_ok), h.mtu or "", ", ".join(h.missing_routes) or "", h.error]
                for h in hosts]  # fmt: skip
        text += "\n\n" + tabulate(
            _cells(rows),
            headers=[
                "host",
                "agent",
                "ready",
                "docker",
                "lease",
                "docker0",
                "bip ok",
                "mtu",
                "missing routes",
                "error",
            ],
        )
    return text


def _lease_host(lease: LeaseInfo) -> str:
    if lease.host:
        return lease.host
    return "(unreadable)" if lease.error else "(stale: no such host)"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _expires(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def verify_doc(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "pairs": [{"from": p.src, "to": p.dst, "ok": p.ok, "rtt_ms": p.rtt_ms,
                   "mtu_ok": p.mtu_ok, "error": p.error} for p in report.pairs],
        "hosts_failed": report.hosts_failed,
        "pairs_expected": report.expected,
        "pairs_untested": report.untested,
        "sampled": report.sampled,  # K peers per host, or null: every pair
        "sample_round": report.sample_round if report.sampled else None,
        "untested": [{"from": a, "to": b} for a, b in report.untested_pairs],
        "next": [f"overlayctl doctor --pair {a},{b}" for a, b in report.doctor_pairs],
    }  # fmt: skip


def verify_text(report: VerifyReport) -> str:
    """A from x to matrix: `0.42 ms` when both pings pass, else what failed."""
    hosts = report.hosts or list(dict.fromkeys(p.src for p in report.pairs))
    cell = {(p.src, p.dst): p for p in report.pairs}

    def show(p: PairResult | None) -> str:
        if p is None:
            return "-"
        if not p.ok:
            return "FAIL"
        rtt = f"{p.rtt_ms:.2f} ms" if p.rtt_ms is not None else "ok"
        return rtt if p.mtu_ok else f"{rtt}, DF FAIL"

    rows = [[src] + [show(cell.get((src, dst))) for dst in hosts] for src in hosts]
    lines = [tabulate(_cells(rows), headers=["from \\ to", *hosts])] if rows else []
    lines += [f"{host}: FAILED {why}" for host, why in report.hosts_failed.items()]
    total = report.expected or len(report.pairs)
    untested = f", {report.untested} not tested" if report.untested else ""
    sampled = ""
    if report.sampled:
        left_out = len(report.hosts) ** 2 - len(report.planned)
        cover = rounds_to_cover(len(report.hosts), report.sampled)
        sampled = (f" ({report.sampled} peers per host, round {report.sample_round}; every pair"
                   f" in {plural(cover, 'round')}; {left_out} other pairs not tested in this"
                   " run)")  # fmt: skip
        total_words = plural(total, "sampled pair")
    else:
        total_words = plural(total, "pair")
    lines.append(
        f"verify: {report.passed}/{total_words} ok{untested}{sampled} "
        "(each with a Don't-Fragment ping at the overlay MTU)" + ("" if report.ok else " -- FAILED")
    )
    lines += [f"next: overlayctl doctor --pair {a},{b}  (why {a} and {b} cannot reach each other)"
              for a, b in report.doctor_pairs]  # fmt: skip
    return printable("\n".join(lines))
