"""init's per-phase wall times (`-o json`'s phases_s): each phase, the waits inside them, in
run order, also when a phase fails; and the JSON document that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl.cli.common import report_doc
from overlayctl.errors import OverlayctlError
from overlayctl.phases.base import Rolling, Rollout, RolloutReport
from overlayctl.phases.engine import run_host_phase, run_phases
from tests.unit.overlayctl.test_phases import HOSTS, Timeline, Unit, restart, rollout, start


@dataclass
class Sleeps:
    """A cluster phase that takes SECONDS (and fails when told)."""

    title: str
    seconds: float
    fails: bool = False

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        Timeline().run("cluster", self.title, self.seconds)
        if self.fails:
            raise OverlayctlError(f"{self.title} failed")


def test_each_phase_gets_its_wall_time_in_run_order() -> None:
    r = rollout(dict.fromkeys(HOSTS, restart()))
    run_phases(r, [Sleeps("connect", 0.05), Sleeps("facts", 0.15),
                   Unit(Rolling.AT_ONCE, Timeline())])  # fmt: skip
    times = r.report.phases_s
    assert list(times) == ["connect", "facts", "unit", "unit restarts"]
    assert 0.05 <= times["connect"] < 0.15 <= times["facts"] < 0.4
    # four hosts restarting together (0.05 s each) cost one restart, not four
    assert 0.05 <= times["unit restarts"] < 0.15
    assert times["unit"] >= times["unit restarts"]


def test_a_failing_phase_still_counts_its_time() -> None:
    r = rollout({host: [] for host in HOSTS})
    with pytest.raises(OverlayctlError):
        run_phases(r, [Sleeps("connect", 0.01), Sleeps("etcd", 0.05, fails=True)])
    assert set(r.report.phases_s) == {"connect", "etcd"} and r.report.phases_s["etcd"] >= 0.05


def test_etcd_health_waits_add_up_member_by_member() -> None:
    """A running cluster restarted one member at a time waits for health after each (0.5 s
    each in the stand-in), then once more at the end."""
    r = rollout({"n1": restart(), "n2": [], "n3": restart(), "n4": start()})
    run_host_phase(r, Unit(Rolling.KEEP_QUORUM, Timeline()))
    assert r.report.phases_s["unit health wait"] == pytest.approx(4 * 0.5)


def test_the_init_document_carries_phases_s_rounded() -> None:
    report = RolloutReport(seconds=3.14159, phases_s={"connect": 0.4567, "docker": 2.0})
    doc = report_doc(report, Path("/x/init.log"))
    assert doc["phases_s"] == {"connect": 0.46, "docker": 2.0}
    assert doc["seconds"] == 3.14
