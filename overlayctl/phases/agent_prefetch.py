"""agent prefetch: where the agent is not running yet (a fresh host), its install starts in the
background right away, while etcd forms and takes its users; the agent phase then only waits
for it (and fails that host there if it failed). Where an agent runs, nothing starts early: its
install stays in the agent phase's one-host-at-a-time roll.

Why: while etcd forms and its users are made, the node hosts idle; their installs (upload,
unpack, byte-compile: about 0.3 CPU-s a host) filled the agent phase after it. At 10 hosts a
fresh init spent 1.5-2 s of wall time with a core idle.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from overlayctl.phases.agent import Agent, install_agent
from overlayctl.phases.base import Rollout, Target


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
        for target in targets:
            if target.bundle is not None:  # always: targets() kept only those with one
                self.agent.prefetched[target.name] = pool.submit(
                    install_agent, rollout.remote(target), target.bundle
                )
        rollout.background.append(lambda: pool.shutdown(wait=True))
