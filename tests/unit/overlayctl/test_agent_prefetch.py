"""A fresh host's agent install starts in the background before etcd's phases (agent_prefetch):
only where the plan installs an agent that is not running yet; the agent phase waits for it
instead of installing again, and fails that host with the install's own error; the engine waits
for the background work however the phases end."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import pytest

from overlayctl.errors import OverlayctlError
from overlayctl.phases import agent_prefetch
from overlayctl.phases.agent import Agent
from overlayctl.phases.agent_prefetch import PrefetchAgents
from overlayctl.phases.base import OnHost, Rollout
from overlayctl.phases.engine import run_phases
from overlayctl.plan.changes import Action
from overlayctl.wheelhouse import AgentBundle
from tests.unit.overlayctl.test_phases import rollout

INSTALL = Action("agent", "install-agent", "d")


def plans() -> Rollout:
    """n1 fresh (install, start), n2 running (install, restart: an upgrade), n3 nothing to do,
    n4 fresh but without a bundle."""
    r = rollout({
        "n1": [INSTALL, Action("agent", "start", "overlay-agent")],
        "n2": [INSTALL, Action("agent", "restart", "overlay-agent")],
        "n3": [],
        "n4": [INSTALL, Action("agent", "start", "overlay-agent")],
    })  # fmt: skip
    for name in ("n1", "n2", "n3"):
        r.targets[name].bundle = AgentBundle((), "d")
    return r


installs_failing: set[str] = set()  # hosts whose install fails


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Each install as (host, thread name); n1's fails when FAIL holds it."""
    done: list[tuple[str, str]] = []

    def install(remote: object, _bundle: AgentBundle) -> None:
        time.sleep(0.2)
        name = remote.name  # type: ignore[attr-defined]
        done.append((name, threading.current_thread().name))
        if name in installs_failing:
            raise OverlayctlError(f"{name}: the install failed")

    monkeypatch.setattr(agent_prefetch, "install_agent", install)
    return done


def test_only_fresh_agents_with_a_bundle_are_installed_early(installs) -> None:
    r, agent = plans(), Agent()
    run_phases(r, [PrefetchAgents(agent)])
    assert set(agent.prefetched) == {"n1"}
    assert [(h, t.split("_")[0]) for h, t in installs] == [("n1", "agent-prefetch")]
    assert r.background == []  # waited for by the engine


def test_the_agent_phase_takes_the_prefetched_install_and_its_failure(installs) -> None:
    r, agent = plans(), Agent()
    installs_failing.add("n1")
    try:
        PrefetchAgents(agent).run(r)
        on = OnHost(r, r.remote(r.targets["n1"]), r.targets["n1"])
        with pytest.raises(OverlayctlError, match="n1: the install failed"):
            agent.act(on, INSTALL)
        assert "n1" not in agent.prefetched  # taken once
    finally:
        installs_failing.clear()
        for wait in r.background:
            wait(False)
    assert [h for h, _ in installs] == ["n1"]  # not installed a second time


class Boom:
    title: ClassVar[str] = "boom"

    def should_run(self, _r: Rollout) -> bool:
        return True

    def run(self, _r: Rollout) -> None:
        raise OverlayctlError("etcd did not form")


def test_the_engine_waits_for_background_installs_when_a_phase_fails(installs) -> None:
    r, agent = plans(), Agent()
    with pytest.raises(OverlayctlError, match="etcd did not form"):
        run_phases(r, [PrefetchAgents(agent), Boom()])
    assert [h for h, _ in installs] == ["n1"]  # finished before run_phases returned


def all_fresh(parallel: int) -> Rollout:
    fresh = [INSTALL, Action("agent", "start", "overlay-agent")]
    r = rollout({name: list(fresh) for name in ("n1", "n2", "n3", "n4")})
    r.options.parallel = parallel
    for target in r.targets.values():
        target.bundle = AgentBundle((), "d")
    return r


def test_a_failed_phase_cancels_the_installs_not_started_yet(installs) -> None:
    """One at a time (--parallel 1): n1's install runs when etcd fails; n2-n4's never start."""
    r, agent = all_fresh(parallel=1), Agent()
    with pytest.raises(OverlayctlError, match="etcd did not form"):
        run_phases(r, [PrefetchAgents(agent), Boom()])
    assert [h for h, _ in installs] == ["n1"]
    assert all(agent.prefetched[n].cancelled() for n in ("n2", "n3", "n4"))


def test_a_host_that_left_the_run_gets_no_install(installs) -> None:
    r, agent = all_fresh(parallel=1), Agent()
    PrefetchAgents(agent).run(r)
    del r.session.remotes["n3"]  # n3 failed a phase meanwhile: the session dropped it
    for wait in r.background:
        wait(False)
    assert [h for h, _ in installs] == ["n1", "n2", "n4"]
    with pytest.raises(OverlayctlError, match="n3: left the run"):
        agent.prefetched["n3"].result()
