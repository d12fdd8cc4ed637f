"""The e2e tier's shared cluster: one 4-host lab, vxlan, `init` on node1-3, booted once for the
whole session and used by every check that leaves it as it found it.

Rule for a test using `shared_cluster`: when it ends, the cluster is healthy again (`status`
exit 0 for `three`), node4 is booted but outside the cluster, and nothing the test added is left
on a host. Tests that break things for good (reset a member, lose etcd data, change the backend)
make their own lab instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from overlayctl.lab import labs, state
from tests.conftest import unique_name
from tests.labtools import cli


@dataclass(frozen=True)
class Cluster:
    lab: state.LabState
    three: Path  # inventory of node1-3: the initialised cluster
    every: Path  # inventory of node1-4: node4 booted, not in the cluster
    # The cluster's first `init` (what a fresh cluster prints), and the local PKI's private keys
    # as that init made them (name -> PEM text): a later `certs rotate` replaces the leaf keys,
    # and test_security must still look for the ones that existed while init printed.
    first_init: subprocess.CompletedProcess[str] = field(repr=False)
    first_keys: dict[str, str] = field(repr=False)

    def __iter__(self):  # (lab, three, every) = cluster, as the modules unpack it
        return iter((self.lab, self.three, self.every))


def make_lab(hosts: int, backend: str, prefix: str = "r") -> tuple[state.LabState, Path, Path]:
    """A lab, an inventory of its first 3 hosts and one of all hosts."""
    lab = labs.up(unique_name(prefix), hosts, "192.168.255.0/24", progress=lambda _m: None)
    doc = yaml.safe_load(lab.inventory.read_text())
    doc["cluster"]["backend"] = backend
    three, every = lab.dir / "three.yaml", lab.dir / "every.yaml"
    three.write_text(yaml.safe_dump({**doc, "hosts": doc["hosts"][:3]}))
    every.write_text(yaml.safe_dump(doc))
    return lab, three, every


def init_or_fail(lab: state.LabState, inventory: Path) -> subprocess.CompletedProcess[str]:
    first = cli(lab, "init", "-i", str(inventory))
    assert first.returncode == 0, first.stdout + first.stderr
    return first


def pki_keys(lab: state.LabState) -> dict[str, str]:
    """The local PKI's private keys (overlayctl-state/<cluster>/pki/*.key): name -> text."""
    (cluster,) = (lab.dir / "overlayctl-state").iterdir()
    return {p.name: p.read_text() for p in sorted((cluster / "pki").glob("*.key"))}


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Cluster]:
    if _SHARED:
        pytest.fail("the shared cluster was already taken down: its users must run in a row")
    lab, three, every = make_lab(4, "vxlan", prefix="s")
    _SHARED.append(lab)
    try:
        first = init_or_fail(lab, three)
        yield Cluster(lab, three, every, first_init=first, first_keys=pki_keys(lab))
    finally:
        _take_down_shared()


# The shared cluster's lab while it is up; taken down as soon as its last user has run (below),
# not at the session's end: an idle 4-host cluster (etcd, docker, agents) would otherwise share
# the machine's two cores with every later module.
_SHARED: list[state.LabState] = []


def _uses_shared(item: pytest.Item | None) -> bool:
    return item is not None and "shared_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after the test's own fixtures have cleaned up on the lab
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The shared cluster's users run in a row (tests/conftest.py orders them first, and on
    one xdist worker): after the last of them, the lab goes."""
    if _uses_shared(item) and not _uses_shared(nextitem):
        _take_down_shared()


def _take_down_shared() -> None:
    for lab in _SHARED:
        labs.down(lab.name, progress=lambda _m: None)  # a no-op once the lab is gone
