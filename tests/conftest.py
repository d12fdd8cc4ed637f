"""Shared fixtures: unique names per run and the two lab tiers."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

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


def pytest_configure(config: pytest.Config) -> None:
    """With xdist (`-n N`, as `make test` runs), the controller builds the installed overlayctl
    once and every worker reuses it (OVERLAYCTL_INSTALLED_VENV), instead of N builds at once."""
    controller = not hasattr(config, "workerinput")
    if (
        controller
        and getattr(config.option, "numprocesses", None)
        and not os.environ.get(installed.ENV_VAR)
    ):
        # A failed build is left to each worker, which reports it in the tests that need it.
        with contextlib.suppress(Exception):
            os.environ[installed.ENV_VAR] = str(installed.get().venv)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _lab_capable()
    if reason is not None:
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"lab tier {reason}"))
    # Longest work first, so that `-n 2 --dist loadgroup` does not end on one long group while
    # the other worker idles: real VMs (`make test` runs them alone, after the rest), the
    # full-host tier, then the light one, then the unit tests.
    items.sort(key=lambda item: _TIER_ORDER.get(_tier(item), len(_TIER_ORDER)))


_TIER_ORDER = {"vm": 0, "shared": 1, "full": 2, "lab": 3}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` with our groups: xdist 3.8's own loadgroup cannot group under pytest 9
    (it renames node ids through an attribute pytest no longer reads), so a lab module would be
    split over both workers, each booting its module's lab and running half its steps. Here
    each lab module is one unit of work, and every user of the session's shared cluster one
    unit (booted once, on one worker); unit tests are distributed one by one."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = _shared_cluster_modules(config.rootpath)

    class LabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if not path.startswith(("tests/e2e/", "tests/integration/")):
                return nodeid
            return "shared-cluster" if path in shared else path

    return LabScheduling(config, log)


def _shared_cluster_modules(root: Path) -> set[str]:
    """The e2e modules that use the session's shared cluster (their text names the fixture)."""
    return {
        str(path.relative_to(root))
        for path in (root / "tests" / "e2e").glob("test_*.py")
        if "shared_cluster" in path.read_text()
    }


def _tier(item: pytest.Item) -> str:
    if item.get_closest_marker("vm"):
        return "vm"
    if "shared_cluster" in getattr(item, "fixturenames", ()):
        return "shared"
    return "full" if "full" in item.keywords else "lab" if "lab" in item.keywords else "unit"


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
