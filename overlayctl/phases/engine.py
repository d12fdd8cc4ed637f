"""The phase engine: an ordered list of phases run over a rollout's hosts.

After k0sctl's phase manager: each phase says whether it should run, then runs. A host phase is
applied on every host at once (at most --parallel together), except where its declared restart
would interrupt a running service (base.Rolling): those hosts go one at a time after the others,
each with its whole phase (files, actions, restart), so two hosts are never down together and a
host the roll did not reach keeps its old files (the next run plans it again). A host that fails
leaves the run; a failed restart stops its roll, and the hosts it did not reach leave the run
too, named. etcd's restarts keep quorum: a running cluster member by member with a health wait,
a new cluster started without waiting for quorum (the phase's start_new: etcd's members one
after another, each once it serves its peers), then one health wait.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from overlayctl.inventory.model import Host
from overlayctl.phases.base import (
    SYSTEMD_KINDS,
    HostPhase,
    OnHost,
    Phase,
    Probe,
    Rolling,
    Rollout,
    RolloutReport,
    Target,
)
from overlayctl.plan.changes import Action
from overlayctl.remote.group import GroupResult
from overlayctl.remote.ssh import Remote
from overlayctl.text import plural


def run_phases(rollout: Rollout, phases: Sequence[Phase | HostPhase]) -> None:
    """PHASES in order, each that should run; then what they left running in the background
    (cancelled where not started yet when a phase failed or the run was interrupted)."""
    failed = True
    try:
        for phase in phases:
            if not phase.should_run(rollout):
                continue
            started = time.monotonic()
            rollout.report.took(phase.title, 0.0)  # its place in the order, before its waits
            try:
                if isinstance(phase, HostPhase):
                    run_host_phase(rollout, phase)
                else:
                    phase.run(rollout)
            finally:
                rollout.report.took(phase.title, time.monotonic() - started)
        failed = False
    finally:
        while rollout.background:
            rollout.background.pop()(failed)


@contextmanager
def timed(report: RolloutReport) -> Iterator[None]:
    """REPORT.seconds is the block's time, however it ended (a summary after a failure too)."""
    started = time.monotonic()
    try:
        yield
    finally:
        report.seconds = time.monotonic() - started


def run_host_phase(rollout: Rollout, phase: HostPhase) -> None:
    """PHASE on every live host it runs on; restarts as its `restart` declares."""
    targets = rollout.live(phase.runs_on)
    probes = _probes(rollout, phase, targets)
    targets = [t for t in targets if t.name in probes]  # a failed probe left the run
    rolling = phase.restart.rolling if phase.restart else Rolling.AT_ONCE
    alone = [t for t in targets if _alone(phase, rolling, t, probes[t.name])]
    restart_now = rolling not in (Rolling.KEEP_QUORUM, Rolling.SEPARATELY)

    def step(host: Host, remote: Remote) -> tuple[int, float]:
        on = OnHost(rollout, remote, rollout.targets[host.name])
        return _step(phase, on, probes[host.name], restart_now)

    together = _record(rollout, phase, rollout.session.each(phase.name, step, [
        t.host for t in targets if t not in alone
    ]))  # fmt: skip
    restarts = [took for _, took in together.values() if took]
    if restarts:  # the hosts restarted together: the slowest one's restart
        rollout.report.took(f"{phase.name} restarts", max(restarts))
    for i, target in enumerate(alone):
        done = _record(rollout, phase, rollout.session.each(phase.name, step, [target.host]))
        if target.name not in done:
            _stop_roll(rollout, phase, target, alone[i + 1 :])
            break
        took = done[target.name][1]
        rollout.report.took(f"{phase.name} restarts", took)
        rollout.say(target.name, phase.name, f"restarted alone ({rolling.value}), {took:.1f} s")
    if rolling is Rolling.KEEP_QUORUM:
        _keep_quorum(rollout, phase, [t for t in targets if t.name in rollout.session.remotes],
                     probes)  # fmt: skip


def _probes(rollout: Rollout, phase: HostPhase, targets: list[Target]) -> dict[str, Probe]:
    """Each host's probe: from its plan, or from the host itself where the phase looks there."""
    if not phase.probe_hosts:
        return {t.name: phase.probe(OnHost(rollout, rollout.remote(t), t)) for t in targets}
    got = rollout.session.each(
        phase.name,
        lambda h, r: phase.probe(OnHost(rollout, r, rollout.targets[h.name])),
        [t.host for t in targets],
    )
    return got.succeeded


def _alone(phase: HostPhase, rolling: Rolling, target: Target, probe: Probe) -> bool:
    """Whether TARGET's restart must wait for a turn of its own (a service it interrupts)."""
    if not probe.restart or not phase.running(target):
        return False
    if rolling is Rolling.ONE_BY_ONE:
        return True
    return rolling is Rolling.WHERE_BUSY and probe.busy


def _step(phase: HostPhase, on: OnHost, probe: Probe, restart_now: bool) -> tuple[int, float]:
    """PHASE on one host: its files, its actions, then its unit's restart when RESTART_NOW
    (else the engine restarts it with the cluster). Returns the changes and the restart's time."""
    files, actions = on.target.plan.in_phase(phase.name)
    phase.write(on, files)
    done = len(files)
    unit = phase.restart.unit if phase.restart else None
    systemd: list[Action] = []  # a run of daemon-reloads and enables: one round trip
    for action in actions:
        if action.target == unit and action.kind in ("start", "restart"):
            continue  # the engine restarts the unit, once, as the phase's rolling says
        if action.kind in SYSTEMD_KINDS:
            systemd.append(action)
            continue
        if systemd:
            phase.act_systemd(on, systemd)
            systemd = []
        phase.act(on, action)
        done += 1
    if systemd:
        phase.act_systemd(on, systemd)
    done += sum(1 for a in actions if a.kind in SYSTEMD_KINDS)
    done += phase.finish(on)
    took = 0.0
    if restart_now and probe.restart:
        started = time.monotonic()
        phase.restart_unit(on, probe, together=True)
        took = time.monotonic() - started
        done += 1
    return done, took


def _record(
    rollout: Rollout, phase: HostPhase, result: GroupResult[tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    """Count each host's changes and say them: `node1        agent     6 changes`."""
    for name, (count, _) in result.succeeded.items():
        rollout.report.changes[name] = rollout.report.changes.get(name, 0) + count
        if count:
            rollout.say(name, phase.name, plural(count, "change"))
    return result.succeeded


def _stop_roll(rollout: Rollout, phase: HostPhase, failed: Target, rest: list[Target]) -> None:
    """A restart failed on FAILED: the hosts after it keep their old files and service; they
    leave the run, named, so that nothing reads as done (a re-run plans them again)."""
    unit = phase.restart.unit if phase.restart else phase.name
    for target in rest:
        rollout.session.fail(
            target.name, phase.name,
            f"not changed: the one-by-one restart of {unit} stopped at {failed.name}, which "
            "failed; re-run once it is fixed",
        )  # fmt: skip


def _keep_quorum(
    rollout: Rollout, phase: HostPhase, targets: list[Target], probes: dict[str, Probe]
) -> None:
    """Start or restart the unit where the plans say, keeping its cluster's quorum: a running
    cluster one member at a time, each healthy before the next; a new one as the phase's
    start_new says, without waiting for quorum (one alone never becomes ready), then one health
    wait. Nothing restarts while a member is out of the run: its state is unknown, and the
    restarts could cost quorum."""
    members = [h for h in rollout.inv.hosts if phase.runs_on(h)]
    lost = [m.name for m in members if m.name not in rollout.session.remotes]
    if lost:
        rollout.say("cluster", phase.name, "skipped: members not reachable: " + ", ".join(lost))
        return
    to_start = [t for t in targets if probes[t.name].restart]
    if not to_start:
        phase.healthy(rollout)
        return
    changes = rollout.report.changes
    if any(phase.running(t) for t in targets):
        phase.admit(rollout, to_start)
        for target in to_start:
            on = OnHost(rollout, rollout.remote(target), target)
            phase.restart_unit(on, probes[target.name], together=False)
            rollout.report.took(f"{phase.name} health wait", phase.healthy(rollout))
            changes[target.name] = changes.get(target.name, 0) + 1
    else:
        for name in phase.start_new(rollout, to_start, probes):
            changes[name] = changes.get(name, 0) + 1
    took = phase.healthy(rollout)
    rollout.report.took(f"{phase.name} health wait", took)
    rollout.say(
        "cluster",
        phase.name,
        f"{plural(len(members), 'member')} healthy ({took:.1f} s after start)",
    )
