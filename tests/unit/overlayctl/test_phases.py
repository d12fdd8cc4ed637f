"""The phase engine without hosts: which hosts restart together and which one at a time, what a
failed restart stops, etcd's quorum-keeping starts, and the host phases' shared order.

Hosts here are stand-ins that only record what happens when (threads run them, as SSH would);
a synthetic phase declares a unit and how its restarts roll, exactly as the real ones do.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from overlayctl.actions import init as init_action
from overlayctl.actions import join as join_action
from overlayctl.errors import OverlayctlError
from overlayctl.inventory import load_inventory, parse_inventory
from overlayctl.phases.base import (
    HostPhase,
    OnHost,
    Probe,
    Restart,
    Rolling,
    Rollout,
    RolloutOptions,
    Target,
)
from overlayctl.phases.engine import run_host_phase
from overlayctl.phases.planner import HOST_PHASES, owner_of
from overlayctl.plan.changes import Action, HostPlan
from overlayctl.plan.facts import parse_facts
from overlayctl.plan.render import render_hosts
from overlayctl.remote.session import Reporter, Session

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HOSTS = ("n1", "n2", "n3", "n4")
INV = load_inventory(GOLDEN / "debian-tls" / "cluster.yaml")[0]


class Timeline:
    """What every host did, with start and end times, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, float, float]] = []

    def run(self, host: str, what: str, seconds: float = 0.05) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.events.append((host, what, started, time.monotonic()))

    def windows(self, what: str) -> dict[str, tuple[float, float]]:
        return {h: (a, b) for h, w, a, b in self.events if w == what}


class FakeRemote:
    def __init__(self, name: str) -> None:
        self.name = name

    def put_files(self, files: list) -> None:
        assert files == []  # the synthetic phase writes no file

    def close(self) -> None:
        pass


def rollout(plans: dict[str, list[Action]], alive: tuple[str, ...] = HOSTS) -> Rollout:
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian"},
        "hosts": [{"name": n, "address": f"10.0.0.{i + 1}", "roles": ["etcd", "node"]}
                  for i, n in enumerate(HOSTS)],
    }  # fmt: skip
    inv, _ = parse_inventory(doc, Path("/nonexistent"))
    lines: list[str] = []
    session = Session(inv, Reporter(None, echo=lines.append), RolloutOptions(), "test")
    session.remotes = {n: FakeRemote(n) for n in alive}  # type: ignore[misc]
    out = Rollout(session, RolloutOptions())
    facts = parse_facts("os_id=debian\n")
    for host in inv.hosts:
        out.targets[host.name] = Target(host, facts, HostPlan(host.name, [], plans[host.name]))
    out.lines = lines  # type: ignore[attr-defined]
    return out


class Unit(HostPhase):
    """A phase whose only action is starting or restarting its unit; BUSY hosts run containers;
    BROKEN hosts fail their restart."""

    name: ClassVar[str] = "unit"
    probe_hosts: ClassVar[bool] = True

    def __init__(self, rolling: Rolling, timeline: Timeline, busy=(), broken=()) -> None:
        self.restart = Restart("svc", rolling)
        self.timeline, self.busy, self.broken = timeline, set(busy), set(broken)
        self.healthy_calls = 0

    def probe(self, on: OnHost) -> Probe:
        planned = on.target.plan.wants("svc", "start", "restart")
        return Probe(restart=planned, busy=on.target.name in self.busy)

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        self.timeline.run(on.target.name, "restart" if together else "restart-wait")
        if on.target.name in self.broken:
            raise OverlayctlError(f"{on.target.name}: svc did not start")

    def healthy(self, rollout: Rollout) -> float:
        self.healthy_calls += 1
        self.timeline.run("cluster", "healthy", 0.01)
        return 0.5


def restart(unit: str = "svc") -> list[Action]:
    return [Action("unit", "restart", unit)]


def start(unit: str = "svc") -> list[Action]:
    return [Action("unit", "start", unit)]


def never_overlap(windows: dict[str, tuple[float, float]]) -> bool:
    ordered = sorted(windows.values())
    return all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))


def test_one_by_one_rolls_running_units_and_starts_fresh_ones_together() -> None:
    plans = {"n1": restart(), "n2": start(), "n3": restart(), "n4": []}
    timeline = Timeline()
    r = rollout(plans)
    run_host_phase(r, Unit(Rolling.ONE_BY_ONE, timeline))
    windows = timeline.windows("restart")
    assert set(windows) == {"n1", "n2", "n3"}
    rolled = {h: w for h, w in windows.items() if h in ("n1", "n3")}
    assert never_overlap(rolled)
    assert windows["n2"][1] <= min(w[0] for w in rolled.values())  # the fresh one first
    assert r.report.changes == {"n1": 1, "n2": 1, "n3": 1, "n4": 0}
    assert any(line.startswith("n3") and "restarted alone (one host at a time)" in line
               for line in r.lines)  # type: ignore[attr-defined]  # fmt: skip


def test_where_busy_rolls_only_the_hosts_running_containers() -> None:
    plans = dict.fromkeys(HOSTS, restart())
    timeline = Timeline()
    run_host_phase(rollout(plans), Unit(Rolling.WHERE_BUSY, timeline, busy={"n2", "n4"}))
    windows = timeline.windows("restart")
    assert set(windows) == set(HOSTS)
    assert never_overlap({h: windows[h] for h in ("n2", "n4")})
    idle = [windows[h] for h in ("n1", "n3")]
    assert idle[0][0] < idle[1][1] and idle[1][0] < idle[0][1]  # at once
    assert all(w[1] <= windows["n2"][0] for w in idle)


def test_a_failed_restart_stops_the_roll_and_names_the_hosts_it_did_not_reach() -> None:
    plans = dict.fromkeys(HOSTS, restart())
    timeline = Timeline()
    r = rollout(plans)
    run_host_phase(r, Unit(Rolling.ONE_BY_ONE, timeline, broken={"n2"}))
    assert sorted(timeline.windows("restart")) == ["n1", "n2"]
    failed = {f.host: f.error for f in r.session.failures}
    assert set(failed) == {"n2", "n3", "n4"}
    assert "stopped at n2" in failed["n3"] and "stopped at n2" in failed["n4"]
    assert sorted(r.session.remotes) == ["n1"]


class Rendezvous(Timeline):
    """Each restart waits until every host's restart has begun: run one after another, the
    first one waits in vain (the barrier breaks). No clock is read, so a loaded machine cannot
    make it pass or fail."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.broken = False

    def run(self, host: str, what: str, seconds: float = 0.0) -> None:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            self.broken = True
        super().run(host, what, seconds)


def test_at_once_restarts_every_host_together() -> None:
    plans = dict.fromkeys(HOSTS, restart())
    timeline = Rendezvous(len(HOSTS))
    run_host_phase(rollout(plans), Unit(Rolling.AT_ONCE, timeline))
    assert set(timeline.windows("restart")) == set(HOSTS) and not timeline.broken


def test_keep_quorum_starts_a_new_cluster_together() -> None:
    plans = dict.fromkeys(HOSTS, start())
    timeline = Timeline()
    phase = Unit(Rolling.KEEP_QUORUM, timeline)
    r = rollout(plans)
    run_host_phase(r, phase)
    windows = timeline.windows("restart")  # together: no waiting for each
    assert set(windows) == set(HOSTS) and not timeline.windows("restart-wait")
    assert phase.healthy_calls == 1
    assert "cluster      unit      4 members healthy (0.5 s after start)" in r.lines  # type: ignore[attr-defined]


def test_keep_quorum_restarts_a_running_cluster_member_by_member_healthy_in_between() -> None:
    plans = {"n1": restart(), "n2": [], "n3": restart(), "n4": start()}
    timeline = Timeline()
    phase = Unit(Rolling.KEEP_QUORUM, timeline)
    run_host_phase(rollout(plans), phase)
    order = [(h, w) for h, w, _, _ in sorted(timeline.events, key=lambda e: e[2])]
    assert order == [
        ("n1", "restart-wait"), ("cluster", "healthy"),
        ("n3", "restart-wait"), ("cluster", "healthy"),
        ("n4", "restart-wait"), ("cluster", "healthy"),
        ("cluster", "healthy"),
    ]  # fmt: skip


def test_keep_quorum_restarts_nothing_while_a_member_is_out_of_the_run() -> None:
    plans = dict.fromkeys(HOSTS, restart())
    timeline = Timeline()
    r = rollout(plans, alive=("n1", "n2", "n3"))
    run_host_phase(r, Unit(Rolling.KEEP_QUORUM, timeline))
    assert timeline.events == []
    assert "cluster      unit      skipped: members not reachable: n4" in r.lines  # type: ignore[attr-defined]


def test_every_file_is_written_by_exactly_one_phase() -> None:
    for inventory in sorted(GOLDEN.glob("*/cluster.yaml")):
        for files in render_hosts(load_inventory(inventory)[0]).values():
            for path in files:
                assert owner_of(path).owns(path)


@pytest.mark.parametrize("phases", [
    init_action.init_phases(RolloutOptions()),
    join_action.join_phases(INV, [], {}),
], ids=["init", "join"])  # fmt: skip
def test_rollouts_list_their_host_phases_in_the_planning_order(phases: list) -> None:
    names = [p.name for p in phases if isinstance(p, HostPhase)]
    assert names == [p.name for p in HOST_PHASES]
