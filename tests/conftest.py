"""Shared fixtures: unique names per run and the two lab tiers."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from overlayctl.lab import labs, state
from tests import installed


def _lab_capable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _lab_capable()
    if reason is None:
        return
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"lab tier {reason}"))


def unique_name(prefix: str = "t") -> str:
    """A lab name no other run here uses (namespaces, cgroups and folders derive from it)."""
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture
def light_lab() -> Iterator:
    """A LightLab on its own LAN; closed (processes killed, namespaces deleted) afterwards."""
    from overlayctl.lab.light import LightLab

    lab = LightLab(unique_name("l"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def full_lab_2() -> Iterator[state.LabState]:
    """Two booted full hosts, shared by one test module; removed at the end of it."""
    name = unique_name("f")
    lab = labs.up(name, 2, "192.168.255.0/24", progress=lambda _msg: None)
    try:
        yield lab
    finally:
        labs.down(name, progress=lambda _msg: None)


@pytest.fixture(scope="session")
def installed_overlayctl() -> installed.Installed:
    """overlayctl as users install it: the checkout's wheel in a new venv (tests/installed.py);
    built once per session, or the venv OVERLAYCTL_INSTALLED_VENV names."""
    return installed.get()


@pytest.fixture
def local_sshd(tmp_path):
    """A real sshd on 127.0.0.1 (a free port) that accepts a throwaway client key for root."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and openssh-server")
    from tests.sshd import start_sshd

    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()
