"""`overlayctl init` and `overlayctl plan`: from an inventory to a healthy etcd cluster holding
the overlay network config, with the agent and docker on the lease on every node host.

The phases, in order (k0sctl's action/apply.go lists its own the same way): connect (and lock),
facts (and the plans), prepare, packages, pki, etcd, the network config and allow-list, etcd's
users and role, agent, `auth enable` (phases/etcd_auth.py says why there), docker. Every
host phase applies what the facts phase planned, so a re-run changes and restarts nothing.
`plan` runs the first two and shows the plans.
"""

from __future__ import annotations

from pathlib import Path

from overlayctl.phases.agent import Agent
from overlayctl.phases.agent_prefetch import PrefetchAgents
from overlayctl.phases.base import HostPhase, Phase, Rollout, RolloutOptions, RolloutReport
from overlayctl.phases.connect import Connect
from overlayctl.phases.docker import Docker
from overlayctl.phases.engine import run_phases, timed
from overlayctl.phases.etcd import Etcd, NetworkConfig
from overlayctl.phases.etcd_auth import AllowList, AuthEnable, EtcdUsers
from overlayctl.phases.facts import Gather
from overlayctl.phases.firewall import Firewall
from overlayctl.phases.packages import Packages
from overlayctl.phases.pki import PushPki
from overlayctl.phases.prepare import Prepare
from overlayctl.remote.session import Session


def init_phases(options: RolloutOptions) -> list[Phase | HostPhase]:
    agent = Agent()
    return [
        Connect(),
        Gather(),
        Prepare(),
        Packages(),
        Firewall(),
        PushPki(),
        PrefetchAgents(agent),  # fresh hosts' installs run beside etcd's forming
        Etcd(),
        NetworkConfig(force=options.force),
        AllowList(),
        EtcdUsers(),
        agent,
        AuthEnable(),
        Docker(),
    ]


def run_init(
    session: Session, options: RolloutOptions, report: RolloutReport | None = None
) -> RolloutReport:
    """Every phase on every host. REPORT (filled as it goes) still tells what was done when a
    phase raises."""
    rollout = Rollout(session, options, report if report is not None else RolloutReport())
    with timed(rollout.report):
        run_phases(rollout, init_phases(options))
    return rollout.report


def run_plan(rollout: Rollout, wheels_dir: Path) -> None:
    """What init would do: ROLLOUT's plans (its report's) and network config change, kept as
    far as they got when a check refuses. Writes nothing, on the hosts or here (the PKI in
    memory, the agent's wheel in WHEELS_DIR)."""
    gather = Gather(refuse_change=False, write=False, wheels_dir=wheels_dir)
    run_phases(rollout, [Connect(), gather])
