"""Helpers for tests on full lab hosts: a lab for a block, overlayctl from its workstation
namespace, and a command on one of its hosts over SSH."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from overlayctl.lab import labs, state
from tests.conftest import unique_name

OVERLAYCTL = str(Path(sys.executable).parent / "overlayctl")


@contextmanager
def full_lab(hosts: int, prefix: str, subnet: str = "192.168.255.0/24") -> Iterator[state.LabState]:
    """HOSTS booted full hosts for the block; removed afterwards, whatever happened."""
    name = unique_name(prefix)
    lab = labs.up(name, hosts, subnet, progress=lambda _m: None)
    try:
        yield lab
    finally:
        labs.down(name, progress=lambda _m: None)


def cli(lab: state.LabState, *args: str) -> subprocess.CompletedProcess[str]:
    """overlayctl run from the lab's workstation namespace, as an operator would."""
    env = {**os.environ, "OVERLAYCTL_INVENTORY": str(lab.inventory)}
    argv = ["ip", "netns", "exec", lab.workstation_netns, OVERLAYCTL, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


def on(lab: state.LabState, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """COMMAND on HOST over SSH from the workstation (strict host keys)."""
    argv = labs.ssh_argv(lab, lab.host(host), command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
