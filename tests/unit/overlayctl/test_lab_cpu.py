"""The CPU the benchmarks charge to a lab host (its cgroup: v1 cpuacct or v2 cpu.stat) and to
the machine (/proc/stat: busy apart from steal), read from files laid out as the kernel does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overlayctl.lab import cgroups


def test_a_hosts_cpu_from_cpuacct_or_cpu_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    (tmp_path / "cpuacct" / "h1").mkdir(parents=True)
    (tmp_path / "cpuacct" / "h1" / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "unified" / "h2").mkdir(parents=True)
    (tmp_path / "unified" / "h2" / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
    )
    assert cgroups.cpu_seconds("h1") == 2.5
    assert cgroups.cpu_seconds("h2") == 1.5
    assert cgroups.cpu_seconds("nowhere") is None


def test_the_machines_busy_time_leaves_idle_iowait_and_steal_apart(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    ticks = [1, 1, 1, 50, 9, 1, 1, 3, 0, 0]
    stat.write_text("cpu  " + " ".join(str(t * tick) for t in ticks) + "\ncpu0 1 2 3 4 5 6 7 8\n")
    assert cgroups.machine_cpu_seconds(stat) == (5.0, 3.0)
