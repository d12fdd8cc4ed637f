"""adopt's TakeOver with other inventories than the runbook's, each on its own 2-host lab:
- docker's flags must change (ip_masq: true, so the agent masquerades and docker must not:
  --ip-masq=false): docker restarts on one host at a time, and the line before it names the
  container a restart loses for good (`solo`, no restart policy; `app` comes back with
  --restart=always, same ID and address);
- `docker.mode: execstart`: docker's own unit gets the agent's flags instead of our drop-in,
  the hand-made override still goes, and docker keeps running."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.e2e.takeover_tools import assert_pings, dockerd_pid, takeover
from tests.labtools import full_lab

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
NAMES = ["node1", "node2"]


@contextmanager
def handbuilt(**cluster: object) -> Iterator[tuple[state.LabState, hb.HandBuilt, Path]]:
    """A hand-built 2-host lab and an inventory with CLUSTER's keys, for one test."""
    with full_lab(2, "tkr") as lab:
        built = hb.build(lab, NAMES)
        yield lab, built, hb.inventory(lab, NAMES, tls=False, **cluster)


def docker_window(lab: state.LabState, host: str, since: str) -> tuple[float, float]:
    """(first stop, last start) of docker on HOST since SINCE (journald's epoch seconds)."""
    out = hb.run(lab, host, f"journalctl -u docker -o short-unix --no-pager --since @{since}")
    stamps = [(float(ln.split()[0]), ln) for ln in out.splitlines() if re.match(r"^\d+\.\d+ ", ln)]
    stops = [t for t, ln in stamps if "Stopping" in ln]
    starts = [t for t, ln in stamps if "Started" in ln]
    assert stops and starts, out
    return min(stops), max(starts)


def test_a_flag_change_restarts_docker_one_host_at_a_time() -> None:
    with handbuilt(ip_masq=True) as (lab, cluster, inventory):
        flag_change(lab, cluster, inventory)


def flag_change(lab: state.LabState, cluster: hb.HandBuilt, inventory: Path) -> None:
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


def test_execstart_mode_edits_dockers_own_unit_and_docker_keeps_running() -> None:
    with handbuilt(docker={"mode": "execstart"}) as (lab, cluster, inventory):
        pids = {h: dockerd_pid(lab, h) for h in NAMES}
        out = takeover(lab, inventory)
        assert out.count("docker keeps running: its flags are the agent's") == 2, out
        for host in NAMES:
            gateway = cluster.hosts[host].docker0
            show = hb.run(lab, host, "systemctl show docker -p DropInPaths -p ExecStart")
            dropins = show.split("DropInPaths=")[1].split()
            assert set(dropins) <= {hb.files.RPM_DOCKER_DROPIN}, show  # no override, no ours
            assert f"--bip={gateway} --ip-masq=true --mtu=1472 ;" in show, show
            assert hb.containers(lab, host) == cluster.hosts[host].containers
        assert {h: dockerd_pid(lab, h) for h in NAMES} == pids
        assert_pings(lab, cluster)
        again = takeover(lab, inventory)
        assert not [ln for ln in again.splitlines() if " takeover " in f" {ln} "], again
