"""The loop of the peer-TLS rounds (peer_tls.py decides each step): observe, step, carry out,
again, through an executor (over SSH: phases/adopt_peers.py; local processes: the integration
tests). Each step is checked where it can go wrong: a restart must end healthy AND running
what its etcd.conf says (else the previous file is put back and restarted), and every member
must reach a URL before the membership moves to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from overlayctl.errors import OverlayctlError
from overlayctl.etcd.peer_tls import (
    Kind,
    MemberView,
    Ports,
    Stage,
    Step,
    choose_ports,
    classify,
    next_step,
)


class Executor(Protocol):
    """Carries out steps on the real members: over SSH (phases/adopt_peers.py) or on local
    processes (the integration tests). Each method raises OverlayctlError when it fails."""

    def observe(self) -> list[MemberView]:
        """The membership and each member's file and running etcd, now, in inventory order."""
        ...

    def write(self, member: str, stage: Stage, ports: Ports) -> None:
        """MEMBER's etcd.conf as STAGE (no restart)."""
        ...

    def restart(self, member: str) -> None: ...

    def wait_healthy(self, member: str) -> float:
        """Every member healthy, asked at the client URLs each serves now; the seconds taken."""
        ...

    def rollback(self, view: MemberView, ports: Ports) -> None:
        """VIEW's member back to the etcd.conf it ran before this step, restarted."""
        ...

    def update(self, member_id: str, url: str) -> None:
        """`member update MEMBER_ID --peer-urls=URL` (retried while etcd calls the cluster
        unhealthy)."""
        ...

    def unreachable(self, url: str, member: str) -> list[str]:
        """The other members that cannot open a TCP connection to MEMBER's URL (a firewall
        that lets 2380 through but not the temporary port would cut the member off)."""
        ...

    def say(self, line: str) -> None: ...


@dataclass
class Done:
    """What `drive` did: each step with its seconds, in order."""

    steps: list[tuple[Step, float]] = field(default_factory=list)

    def by_round(self) -> dict[str, float]:
        """Seconds per round (R1, U1, R2, U2, repair)."""
        rounds: dict[str, float] = {}
        for step, took in self.steps:
            rounds[step.round] = rounds.get(step.round, 0.0) + took
        return rounds


# Two steps per member per round plus repairs: a cluster of 9 takes at most 4 * 9 + a few.
MAX_STEPS = 64


def drive(ex: Executor, want: Ports | None = None, max_steps: int = MAX_STEPS) -> Done:
    """Observe, take the next step, again, until every peer URL is https:2380. A restart that
    does not end healthy puts the member's previous etcd.conf back (restarted) and stops here;
    so does anything blocked. The ports are chosen once per run, from WANT and what is found."""
    done = Done()
    ports: Ports | None = None
    for _ in range(max_steps):
        views = ex.observe()
        ports = ports or choose_ports(views, want or Ports())
        step = next_step(views, ports)
        if step.kind is Kind.DONE:
            return done
        if step.kind is Kind.BLOCKED:
            raise OverlayctlError(f"etcd peers to TLS: {step.reason}")
        ex.say(step.describe())
        started = time.monotonic()
        _carry_out(ex, step, next(v for v in views if v.name == step.member), ports)
        done.steps.append((step, time.monotonic() - started))
    raise OverlayctlError(f"etcd peers to TLS: not done after {max_steps} steps (a bug)")


def _carry_out(ex: Executor, step: Step, view: MemberView, ports: Ports) -> None:
    if step.kind is Kind.UPDATE:
        cut_off = ex.unreachable(step.url, step.member)
        if cut_off:
            raise OverlayctlError(
                f"{', '.join(cut_off)} cannot connect to {step.url}: open that TCP port between "
                f"the etcd members; stopped before `member update` of {step.member}, nothing "
                "changed in etcd"
            )
        ex.update(step.member_id, step.url)
        ex.wait_healthy(step.member)
        return
    if step.stage is None:  # a FILE step for a member not running: a repair restarts it first
        raise OverlayctlError(f"etcd peers to TLS: {step.describe()} without a stage (a bug)")
    if step.write:
        ex.write(step.member, step.stage, ports)
    if step.kind is Kind.FILE:
        return
    try:
        ex.restart(step.member)
        ex.wait_healthy(step.member)
        _check_running(ex, step, ports)
    except OverlayctlError as exc:
        try:
            ex.rollback(view, ports)
        except OverlayctlError as again:
            raise OverlayctlError(
                f"{step.member}: etcd did not come back as {step.stage.value} ({exc}), and "
                f"putting its previous etcd.conf back failed too ({again})"
            ) from None
        raise OverlayctlError(
            f"{step.member}: etcd did not come back as {step.stage.value} ({exc}); its "
            "previous etcd.conf is back and it was restarted; the roll stops here (a re-run "
            "resumes from what it finds)"
        ) from None


def _check_running(ex: Executor, step: Step, ports: Ports) -> None:
    """The restarted etcd runs as its new etcd.conf says (else its unit reads another file or
    has flags of its own, and every further restart would change nothing: the run would loop)."""
    now = next(v for v in ex.observe() if v.name == step.member)
    if classify(now.running_peers, ports) is not step.stage:
        raise OverlayctlError(
            f"after its restart etcd listens on {now.running_peers or 'nothing'}, not what its "
            "etcd.conf says: does its unit read that file (EnvironmentFile, ExecStart flags)?"
        )
