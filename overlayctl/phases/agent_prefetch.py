"""agent prefetch: where the agent is not running yet (a fresh host), its install starts in the
background right away, while etcd forms and takes its users; the agent phase then only waits
for it (and fails that host there if it failed). Where an agent runs, nothing starts early: its
install stays in the agent phase's one-host-at-a-time roll. A host that left the run (its
connection closed) gets no install; when a phase fails or the run is interrupted, the installs
not started yet are cancelled and the running ones waited for.

Why: while etcd forms and its users are made, the node hosts idle; their installs (upload,
unpack, byte-compile: about 0.3 CPU-s a host) filled the agent phase after it. At 10 hosts a
fresh init spent 1.5-2 s of wall time with a core idle.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from overlayctl.errors import OverlayctlError
from overlayctl.phases.agent import Agent, install_agent
from overlayctl.phases.base import Rollout, Target
from overlayctl.wheelhouse import AgentBundle


@dataclass
class PrefetchAgents:
    """Starts AGENT's installs on the hosts where its plan starts a fresh agent."""

    agent: Agent
    title: ClassVar[str] = "agent prefetch"

    def should_run(self, rollout: Rollout) -> bool:
        return bool(self.targets(rollout))

    def targets(self, rollout: Rollout) -> list[Target]:
        return [
            t
            for t in rollout.live(self.agent.runs_on)
            if t.bundle is not None
            and not self.agent.running(t)
            and any(a.kind == "install-agent" for a in t.plan.in_phase(self.agent.name)[1])
        ]

    def run(self, rollout: Rollout) -> None:
        targets = self.targets(rollout)
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(rollout.options.parallel, len(targets))),
            thread_name_prefix="agent-prefetch",
        )
        session = rollout.session

        def install(name: str, bundle: AgentBundle) -> None:
            remote = session.remotes.get(name)
            if remote is None:  # the host left the run before its turn: nothing is started
                raise OverlayctlError(f"{name}: left the run before its agent's install")
            install_agent(remote, bundle)

        for target in targets:
            if target.bundle is not None:  # always: targets() kept only those with one
                self.agent.prefetched[target.name] = pool.submit(
                    install, target.name, target.bundle
                )
        rollout.background.append(lambda failed: pool.shutdown(wait=True, cancel_futures=failed))
