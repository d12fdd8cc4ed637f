"""scale.py's report: one size's JSON figures, the growth table over sizes, the goals of the
largest size beside its figures (issue 20), and the JSON line."""

from __future__ import annotations

import statistics

from _lab import goal_rows, percentile, rounded

GOALS = {
    "config_to_ready_s": 3.0, "exec_to_ready_s": 0.5, "route_p99_s": 0.3,
    "etcd_requests_per_agent_start": 5.0, "etcd_requests_per_agent_minute_idle": 1.0,
    "rss_mb": 20.0,
}  # fmt: skip


def figures(m: dict) -> dict:
    """The JSON figures of one size."""
    n = m["n"]
    restart = m["restart"]
    full = m.get("full")
    return {
        "agents": n, "duplicates": len(m["dups"]),
        "all_ready_s": rounded(m["waited_s"] + m["config_to_ready"], 2),
        "config_to_ready_s": rounded(m["config_to_ready"], 2),
        "exec_to_ready_s": rounded(statistics.median(m["exec_to_ready"]), 3),
        "route_p50_s": rounded(percentile(m["from_lease"], 50)),
        "route_p99_s": rounded(percentile(m["from_lease"], 99)),
        "routes_missing": len(m["missing"]), "peer_routes_wrong": len(m["routes_wrong"]),
        "etcd_requests_per_agent_start": rounded(sum(m["started"].values()) / (n - 1), 2),
        "etcd_requests_per_agent_minute_idle": rounded(m["idle_per_min"], 2),
        "etcd_cpu_start_s": rounded(m["etcd_cpu"], 2),
        "agents_cpu_start_s": rounded(m["agents_cpu"], 2),
        "rss_mb": rounded(statistics.median(m["rss"]), 1), "rss_max_mb": rounded(max(m["rss"]), 1),
        "idle_cpu_pct": rounded(statistics.median(m["cpu"]), 2),
        "start_cpu_s": rounded(statistics.median(m["start_cpu"]), 2),
        "full_network_error_ok": None if full is None else bool(full["ok"]),
        "full_network": full,
        "etcd_restart_resyncs_max": restart["resyncs_max"],
        "etcd_restart_ok": restart["resyncs_max"] <= 1 and not restart["unanswered"]
        and not restart["leases_lost"] and not restart["leases_changed"]
        and not restart["routes_lost"],
    }  # fmt: skip


def report(runs: list[dict]) -> dict:
    """The growth table, the goals of the largest size, and its JSON line."""
    rows = [figures(m) for m in runs]
    keys = ("config_to_ready_s", "route_p99_s", "etcd_requests_per_agent_start",
            "etcd_cpu_start_s", "agents_cpu_start_s", "exec_to_ready_s", "rss_mb")  # fmt: skip
    print()
    print("agents " + " ".join(f"{k.removesuffix('_s'):>18.18}" for k in keys))
    for row in rows:
        print(f"{row['agents']:>6} " + " ".join(f"{row[k]!s:>18}" for k in keys))
    last, m = rows[-1], runs[-1]
    print(f"\n{last['agents']} agents: requests per agent at start by method: " + ", ".join(
        f"{k} {v / (m['n'] - 1):.2f}" for k, v in sorted(m["started"].items()) if v)
        + f"; duplicates {m['dups'] or 'none'}; /readyz not 200: {m['not_ready'] or 'none'}; "
        f"wrong peer-route counts: {m['routes_wrong'][:5] or 'none'}")  # fmt: skip
    print(f"load before the start {m['load']:.1f}; {m['waiting']} agents waited for the config "
          f"{m['waited_s']:.1f} s after the first exec; etcd restart: {m['restart']}")  # fmt: skip
    print()
    print(goal_rows([
        ("config to ready, all agents", last["config_to_ready_s"], "s",
         GOALS["config_to_ready_s"]),
        ("duplicates", float(last["duplicates"]), "", 0),
        ("one agent exec to READY, median", last["exec_to_ready_s"], "s",
         GOALS["exec_to_ready_s"]),
        ("route after join, p99 (from lease)", last["route_p99_s"], "s", GOALS["route_p99_s"]),
        ("etcd requests per agent (start)", last["etcd_requests_per_agent_start"], "",
         GOALS["etcd_requests_per_agent_start"]),
        ("etcd requests per agent per idle minute", last["etcd_requests_per_agent_minute_idle"],
         "", GOALS["etcd_requests_per_agent_minute_idle"]),
        ("agent RSS median", last["rss_mb"], "MB", GOALS["rss_mb"]),
    ]))  # fmt: skip
    result = dict(last)
    result["goals"] = GOALS
    if len(rows) > 1:
        result["growth"] = {str(r["agents"]): {k: r[k] for k in keys} for r in rows}
    return result
