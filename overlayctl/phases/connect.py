"""connect: every host over SSH with strict host key checking, each one able to act as root, and
the run's lock on each (the first host's alone first: it is the cluster's). See remote/session.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlayctl.phases.base import Rollout


@dataclass
class Connect:
    title: str = "connect"

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        rollout.session.open()
