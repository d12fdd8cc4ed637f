"""The per-host plan, from every host phase in its order: the files each owns that differ
(content, mode or owner), then the actions each plans from the facts. Pure.

HOST_PHASES is the order of the host phases in every rollout (init, join, certs rotate), and so
of the plan `plan` shows; the actions list them in it (tests/unit/overlayctl/test_phases.py).
"""

from __future__ import annotations

from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host
from overlayctl.phases.agent import Agent
from overlayctl.phases.base import HostPhase, PlanInput
from overlayctl.phases.docker import Docker
from overlayctl.phases.etcd import Etcd
from overlayctl.phases.firewall import Firewall
from overlayctl.phases.packages import Packages, missing_packages
from overlayctl.phases.pki import PushPki
from overlayctl.phases.prepare import Prepare
from overlayctl.plan.changes import DesiredFile, FileChange, HostPlan, same_owner
from overlayctl.plan.facts import Facts, RemoteFile

HOST_PHASES: tuple[HostPhase, ...] = (
    Prepare(),
    Packages(),
    Firewall(),
    PushPki(),
    Etcd(),
    Agent(),
    Docker(),
)


def owner_of(path: str) -> HostPhase:
    """The host phase that writes PATH (exactly one does)."""
    owners = [p for p in HOST_PHASES if p.owns(path)]
    if len(owners) != 1:
        raise OverlayctlError(f"{path}: written by {len(owners)} phases, not one (a bug)")
    return owners[0]


def plan_host(
    host: Host,
    family: str,
    desired: dict[str, DesiredFile],
    current: dict[str, RemoteFile],
    facts: Facts,
    *,
    restart_network: bool = False,
    agent_digest: str | None = None,
    docker_mode: str = "dropin",
) -> HostPlan:
    """AGENT_DIGEST: the fingerprint of the agent wheelhouse to have installed (node hosts)."""
    plan = HostPlan(host.name)
    owners = {path: owner_of(path) for path in desired}
    desired = {p: f for p, f in desired.items() if owners[p].keeps(p, facts)}
    for phase in HOST_PHASES:
        for path in sorted(p for p in desired if owners[p] is phase):
            want, have = desired[path], current.get(path, RemoteFile(path, None))
            same = phase.same(host, path, have, want, facts) and have.mode == want.mode
            if not (same and same_owner(have, want)):
                plan.files.append(FileChange(phase.name, path, want, have))
    inp = PlanInput(
        host, family, facts, desired, frozenset(f.path for f in plan.files),
        " ".join(missing_packages(host, family, facts)), restart_network, agent_digest,
        docker_mode,
    )  # fmt: skip
    for phase in HOST_PHASES:
        plan.actions += phase.actions(inp)
    return plan
