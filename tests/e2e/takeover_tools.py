"""Helpers of adopt's TakeOver e2e tests: the driver run in a lab's workstation namespace
(takeover_driver.py), dockerd's PID, and the containers' pings across hosts."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from pathlib import Path

from overlayctl.lab import state
from tests import installed
from tests.e2e import handbuilt as hb
from tests.labtools import on

DRIVER = Path(__file__).with_name("takeover_driver.py")


def takeover(lab: state.LabState, inventory: Path, *hosts: str, ok: bool = True) -> str:
    """The driver in the workstation namespace; its output (OK: it must succeed, else fail)."""
    argv = ["ip", "netns", "exec", lab.workstation_netns, str(installed.get().python),
            str(DRIVER), str(inventory), *hosts]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env=installed.clean_env(), cwd=installed.get().venv)  # fmt: skip
    print(f"takeover {' '.join(hosts) or 'all'}: {time.monotonic() - started:.1f} s\n"
          f"{done.stdout}")  # fmt: skip
    assert (done.returncode == 0) is ok, done.stdout + done.stderr
    return done.stdout


def dockerd_pid(lab: state.LabState, host: str) -> str:
    return hb.run(lab, host, "systemctl show -p MainPID --value docker").strip()


def assert_pings(
    lab: state.LabState, cluster: hb.HandBuilt, names: tuple[str, ...] = (hb.APP, hb.SOLO)
) -> None:
    """Each of NAMES on each host pings the same container on the other host."""
    for host, other in (("node1", "node2"), ("node2", "node1")):
        for name in names:
            ip = cluster.hosts[other].containers[name].ip
            assert hb.ping(lab, host, ip, container=name), (host, name, ip)


def start_probe(lab: state.LabState, host: str, ip: str, seconds: int = 180) -> str:
    """Pings IP every 0.2 s from APP's network namespace on HOST (the host's own ping, -D
    timestamps), in the background for at most SECONDS; returns the probe's unit name."""
    unit = f"probe-{ip.replace('.', '-')}"
    pid = f"$(docker inspect -f '{{{{.State.Pid}}}}' {hb.APP})"
    # (not ping's -w: with a deadline, iputils' ping ends at the first error, e.g. an ICMP
    # unreachable while a host's overlay route is away)
    hb.run(lab, host, f"systemd-run --unit={unit} sh -c \"timeout {seconds} nsenter -t {pid} -n "
                      f"ping -D -n -i 0.2 {ip} > /run/{unit}.log 2>&1\"")  # fmt: skip
    return unit


def probe_gap(lab: state.LabState, host: str, unit: str) -> tuple[float, int]:
    """Stop UNIT's pings on HOST: (longest time between two replies, replies)."""
    on(lab, host, f"systemctl stop {unit}")
    out = hb.run(lab, host, f"cat /run/{unit}.log")
    stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return (max(gaps) if gaps else float("inf")), len(stamps)
