"""Presentation: plan diffs, status tables and JSON. No decisions, no I/O: text out.

Every text and table goes through text.printable on its way out: what etcd or a host says (a
lease's BackendType, an error, a file's old content in a diff) reaches the operator's terminal
as characters, never as a control sequence. The JSON documents are left exact (json.dumps
escapes control characters itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tabulate import tabulate

from overlayctl.actions.status import HostStatus
from overlayctl.actions.verify import PairResult, VerifyReport, rounds_to_cover
from overlayctl.etcd.cluster import ClusterStatus, LeaseInfo
from overlayctl.plan.changes import HostPlan
from overlayctl.plan.handbuilt import HandBuilt, HostHandBuilt
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
    plans: dict[str, HostPlan],
    network_config: dict[str, Any] | None = None,
    adoption: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`plan -o json`: the total, per host its file changes (diffs) and actions, the network
    config's replacement when etcd holds another one ({"current", "desired", "describe"}), and
    ADOPTION (adoption_doc) when the cluster was built by hand."""
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
    return {"changes": total, "hosts": hosts, "network_config": network_config,
            "adoption": adoption}  # fmt: skip


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


def adoption_text(found: HandBuilt) -> str:
    """`plan` on a cluster built by hand (docs/design/adopt.md 2.4): why init refuses, then
    what etcd and each host hold of the runbook's set-up, one line each."""
    out = [f"=== adoption: init would refuse: {found.refusal()}"]
    etcd = found.etcd
    if found.via:
        out.append(f"--- etcd: read through {found.via} at {etcd.client_url or '(not running)'}")
    for m in etcd.members or ():
        out.append(f"--- etcd: member {m.name} {m.id} peers {','.join(m.peer_urls)} "
                   f"clients {','.join(m.client_urls)}")  # fmt: skip
    if found.v2.config is not None:
        out.append(f"--- v2: {found.v2.config_key} = {found.v2.config}")
    for lease in found.v2.leases:
        ttl = "reservation" if lease.ttl is None else f"ttl {_expires(lease.ttl)}"
        out.append(f"--- v2: lease {lease.subnet} {lease.public_ip} {ttl}")
    for error in (etcd.members_error, found.v2.error):
        out += [f"--- etcd: {error}"] if error else []
    for name, host in found.hosts.items():
        out += [f"--- {name}: {line}" for line in _host_lines(host)]
    return printable("\n".join(out))


def _host_lines(host: HostHandBuilt) -> list[str]:
    lines = []
    unit = host.flanneld
    if unit.fragment:
        pulled = ", ".join(f"required by {u}" for u in unit.required_by)
        lines.append(f"flanneld.service {unit.state.active} {unit.state.enabled or '-'} "
                     f"({unit.fragment}{'; ' + pulled if pulled else ''})")  # fmt: skip
    docker = host.docker
    if docker.bound_to_flanneld:
        lines.append("docker.service requires flanneld.service: stopping flanneld stops docker")
    if host.drop_ins or host.flanneld.fragment:
        lines += [f"docker ExecStart {' '.join(argv)}" for argv in docker.exec_start]
    lines += [f"{d.unit} drop-in {d.path} sets {', '.join(d.settings) or 'nothing'}"
              f"{' (sorts after ours: it wins)' if d.sorts_after_ours else ''}"
              for d in host.drop_ins]  # fmt: skip
    if host.daemon_json_keys:
        lines.append(f"/etc/docker/daemon.json sets {', '.join(host.daemon_json_keys)}")
    lines += [f"device {d.name} ({d.kind}{', persistent' if d.persistent else ''})"
              for d in host.devices]  # fmt: skip
    lines += [f"route {r}" for r in host.routes if " dev flannel" in r]
    if host.subnet_env is not None:
        lines.append(f"subnet.env FLANNEL_SUBNET={host.subnet_env.get('FLANNEL_SUBNET', '?')}")
    if host.etcd_conf_foreign:
        lines.append("etcd.conf not written by overlayctl")
    lines += [f"container {c.name} {c.id[:12]} restart={c.restart} ip={c.ip or '-'}"
              for c in host.containers]  # fmt: skip
    return lines


def adoption_doc(found: HandBuilt | None) -> dict[str, Any] | None:
    """`plan -o json`'s "adoption": the record of a cluster built by hand, null otherwise."""
    if found is None or not found.found:
        return None
    hosts = {}
    for name, host in found.hosts.items():
        doc = dataclasses.asdict(host)
        doc["drop_ins"] = [
            {"unit": d.unit, "path": d.path, "settings": list(d.settings),
             "sorts_after_ours": d.sorts_after_ours}
            for d in host.drop_ins
        ]  # fmt: skip
        doc["signs"] = host.signs()
        hosts[name] = doc
    etcd = dataclasses.asdict(found.etcd)
    del etcd["v2_text"]  # parsed into "v2"
    return {"refusal": found.refusal(), "via": found.via, "etcd": etcd,
            "v2": dataclasses.asdict(found.v2), "hosts": hosts}  # fmt: skip
