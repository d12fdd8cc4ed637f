"""The facts phase without hosts: one round trip per host (facts, every file the host may be
given, and on the first etcd member the network config), then the checks that come before any
change (a different network config, a foreign CA) and each host's plan."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.errors import Conflict
from overlayctl.etcd import netconfig
from overlayctl.inventory import parse_inventory
from overlayctl.phases import facts as facts_phase
from overlayctl.phases.base import Rollout, RolloutOptions
from overlayctl.remote.session import Reporter, Session
from overlayctl.remote.ssh import Command, RunResult
from overlayctl.wheelhouse import AgentBundle

FACTS = """os_id=debian
os_like=
arch=x86_64
hostname={name}
python=3.11
pkg_manager=apt-get
ip_forward=1
systemd=yes
unit=etcd active enabled
addr=eth0 {address}/24
"""


class FakeRemote:
    """Answers the facts round trip: facts.sh, read-files.sh (every file absent but the CA),
    and the network config (as etcdctl's JSON) when asked."""

    def __init__(self, name: str, address: str, config: dict | None, ca: bytes | None) -> None:
        self.name, self.address, self.config, self.ca = name, address, config, ca
        self.batches: list[list[str]] = []

    def batch(self, commands: Sequence[Command], **_kw: object) -> list[RunResult]:
        self.batches.append([label for _, label in commands])
        out = [RunResult(0, FACTS.format(name=self.name, address=self.address), "")]
        paths = commands[1][0][4:]  # sh -c SCRIPT sh PATH...
        lines = []
        for path in paths:
            if path == hp.CA_CERT and self.ca is not None:
                lines.append(f"file 644 root:root {base64.b64encode(self.ca).decode()}")
            else:
                lines.append("absent")
        out.append(RunResult(0, "\n".join(lines) + "\n", ""))
        if len(commands) > 2:
            raw = json.dumps(self.config).encode()
            kvs = [{"value": base64.b64encode(raw).decode()}] if self.config else []
            out.append(RunResult(0, json.dumps({"kvs": kvs}), ""))
        return out

    def close(self) -> None:
        pass


class FakeBundles:
    def __init__(self, _folder: Path, _agent_options: tuple[str, ...] = ()) -> None:
        pass

    def check(self, targets: dict[str, tuple[str, str]]) -> None:
        pass

    def get(self, python: str, arch: str) -> AgentBundle:
        return AgentBundle((), f"digest-{python}-{arch}")


def rollout(tmp_path: Path, config: dict | None = None, ca: bytes | None = None,
            force: bool = False) -> tuple[Rollout, dict[str, FakeRemote]]:  # fmt: skip
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "tls": False},
        "hosts": [{"name": f"n{i}", "address": f"10.0.0.{i}"} for i in (1, 2, 3)],
    }
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    session = Session(inv, Reporter(None, echo=lambda _l: None), RolloutOptions(), "test")
    remotes = {h.name: FakeRemote(h.name, str(h.address), config, ca) for h in inv.hosts}
    session.remotes = dict(remotes)  # type: ignore[arg-type]
    return Rollout(session, RolloutOptions(force=force)), remotes


@pytest.fixture(autouse=True)
def no_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts_phase, "Bundles", FakeBundles)


def test_one_round_trip_per_host_the_config_read_on_the_first_member_only(tmp_path) -> None:
    r, remotes = rollout(tmp_path)
    facts_phase.Gather().run(r)
    assert [len(remotes[n].batches) for n in ("n1", "n2", "n3")] == [1, 1, 1]
    labels = remotes["n1"].batches[0]
    assert labels[0].startswith("sh -c <facts> ") and labels[1].startswith("sh -c <read-files> ")
    assert labels[2] == netconfig.read_command(r.inv)[1]
    assert len(remotes["n2"].batches[0]) == 2
    assert sorted(r.targets) == ["n1", "n2", "n3"] and r.targets["n1"].host.os == "debian"
    assert r.inv.hosts[0].os is None  # the inventory is never rewritten
    plan = r.report.plans["n2"]
    assert {f.path for f in plan.files} >= {hp.HOSTS, hp.HOSTNAME, hp.SYSCTL, hp.ETCD_CONF}


def test_a_different_network_config_is_refused_before_anything_is_made(tmp_path) -> None:
    old = {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}}
    r, _ = rollout(tmp_path, config=old)
    with pytest.raises(Conflict, match="Re-run with --force"):
        facts_phase.Gather().run(r)
    assert r.targets == {} and r.report.plans == {}


def test_with_force_the_change_is_planned_on_every_node(tmp_path) -> None:
    old = {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}}
    r, _ = rollout(tmp_path, config=old, force=True)
    facts_phase.Gather().run(r)
    assert r.known_config == old and r.change is not None
    for plan in r.report.plans.values():
        agent = [(a.kind, a.target) for a in plan.actions if a.phase == "agent"]
        # the old backend's device goes before the agent (re)starts, which it does once
        gone = agent.index(("remove-device", "flannel0"))
        starts = [i for i, (kind, unit) in enumerate(agent)
                  if unit == "overlay-agent" and kind in ("start", "restart")]  # fmt: skip
        assert len(starts) == 1 and gone < starts[0], agent


def test_plan_keeps_the_plans_when_the_network_cannot_change(tmp_path) -> None:
    other = {"Network": "10.9.0.0/16", "Backend": {"Type": "vxlan"}}
    r, _ = rollout(tmp_path, config=other)
    with pytest.raises(Conflict, match="Network cannot change"):
        facts_phase.Gather(refuse_change=False, write=False).run(r)
    assert sorted(r.report.plans) == ["n1", "n2", "n3"] and r.change is not None
