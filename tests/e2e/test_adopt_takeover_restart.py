"""adopt's TakeOver where docker's flags must change (the inventory's ip_masq: true, so the
agent masquerades and docker must not: --ip-masq=false): docker restarts, on one host at a
time, and the line before it names the container a restart loses for good (`solo`, no restart
policy; `app` comes back with --restart=always, same ID and address). Its own 2-host lab."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.e2e.takeover_tools import assert_pings, dockerd_pid, takeover
from tests.labtools import full_lab

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
NAMES = ["node1", "node2"]


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[state.LabState, hb.HandBuilt, Path]]:
    with full_lab(2, "tkr") as lab:
        cluster = hb.build(lab, NAMES)
        yield lab, cluster, hb.inventory(lab, NAMES, tls=False, ip_masq=True)


def docker_window(lab: state.LabState, host: str, since: str) -> tuple[float, float]:
    """(first stop, last start) of docker on HOST since SINCE (journald's epoch seconds)."""
    out = hb.run(lab, host, f"journalctl -u docker -o short-unix --no-pager --since @{since}")
    stamps = [(float(ln.split()[0]), ln) for ln in out.splitlines() if re.match(r"^\d+\.\d+ ", ln)]
    stops = [t for t, ln in stamps if "Stopping" in ln]
    starts = [t for t, ln in stamps if "Started" in ln]
    assert stops and starts, out
    return min(stops), max(starts)


def test_a_flag_change_restarts_docker_one_host_at_a_time(built) -> None:
    lab, cluster, inventory = built
    since = hb.run(lab, "node1", "date +%s").strip()
    pids = {h: dockerd_pid(lab, h) for h in NAMES}
    out = takeover(lab, inventory)
    for host in NAMES:
        line = (f"{host}        takeover  docker restarts: --ip-masq true -> false; containers "
                "without a restart policy stay stopped: solo")  # fmt: skip
        assert line in out, out
        assert dockerd_pid(lab, host) != pids[host]
        args = hb.run(lab, host, "tr '\\0' ' ' < /proc/$(pidof dockerd)/cmdline")
        assert "--ip-masq=false" in args, args
        was, now = cluster.hosts[host].containers, hb.containers(lab, host)
        assert now[hb.APP].id == was[hb.APP].id and now[hb.APP].ip == was[hb.APP].ip
        assert now[hb.APP].started_at != was[hb.APP].started_at  # it restarted with docker
        assert hb.run(lab, host, f"docker inspect -f '{{{{.State.Running}}}}' {hb.SOLO}").strip() \
            == "false"  # fmt: skip
        assert hb.run(lab, host, "ip -4 -o addr show docker0").split()[3] == \
            cluster.hosts[host].docker0  # fmt: skip
    windows = sorted((docker_window(lab, h, since), h) for h in NAMES)
    for ((_, a_end), a), ((b_start, _), b) in itertools.pairwise(windows):
        assert a_end <= b_start, f"docker down on {a} and {b} at once: {windows}"
    print(f"docker outage per host: { {h: round(e - s, 1) for (s, e), h in windows} }")
    assert_pings(lab, cluster, names=(hb.APP,))
    again = takeover(lab, inventory)  # nothing left: docker runs with the agent's flags now
    assert not [ln for ln in again.splitlines() if " takeover " in f" {ln} "], again
