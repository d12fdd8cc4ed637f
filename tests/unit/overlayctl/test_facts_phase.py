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
from overlayctl.plan.handbuilt import V2Found, parse_etcd
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
    """Answers the facts round trip: facts.sh (FACTS_TEXT, or FACTS for the host), read-files.sh
    (every file absent but the CA and FILES), the network config (as etcdctl's JSON) and etcd as
    it runs (etcd-found.sh's lines: ETCD) when asked."""

    def __init__(self, name: str, address: str, config: dict | None, ca: bytes | None) -> None:
        self.name, self.address, self.config, self.ca = name, address, config, ca
        self.batches: list[list[str]] = []
        self.argvs: list[list[str]] = []
        self.facts_text = FACTS.format(name=name, address=address)
        self.files: dict[str, bytes] = {}
        self.etcd = ""  # no etcd running

    def batch(self, commands: Sequence[Command], **_kw: object) -> list[RunResult]:
        self.batches.append([label for _, label in commands])
        self.argvs += [list(argv) for argv, _ in commands]
        out = [RunResult(0, self.facts_text, "")]
        paths = commands[1][0][4:]  # sh -c SCRIPT sh PATH...
        found = {**self.files, **({hp.CA_CERT: self.ca} if self.ca is not None else {})}
        lines = [f"file 644 root:root {base64.b64encode(found[p]).decode()}" if p in found
                 else "absent" for p in paths]  # fmt: skip
        out.append(RunResult(0, "\n".join(lines) + "\n", ""))
        for _argv, label in commands[2:]:
            if "<etcd-found>" in label:
                out.append(RunResult(0, self.etcd, ""))
                continue
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
            force: bool = False, tls: bool = False,
            ) -> tuple[Rollout, dict[str, FakeRemote]]:  # fmt: skip
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "tls": tls},
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
    assert labels[3].startswith("sh -c <etcd-found> (then python3 -c <etcd_v2_dump> ")
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


# --- a cluster built by hand (docs/design/adopt.md 2.5) -----------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "handbuilt"
PREFIX = "/coreos.com/network"  # the inventory's: the runbook's keys moved under it
HAND_CONF = b'#[Member]\nETCD_DATA_DIR="/var/lib/etcd/{name}.etcd"\nETCD_NAME="{name}"\n'


def by_hand(tmp_path: Path) -> tuple[Rollout, dict[str, FakeRemote]]:
    """n1 and n2 as the runbook's hosts (the captured node1's facts and etcd), n3 fresh;
    cluster.tls on, as by default."""
    r, remotes = rollout(tmp_path, tls=True)
    captured = (FIXTURES / "facts-hand-node1.txt").read_text()
    for name in ("n1", "n2"):
        remote = remotes[name]
        ours = FACTS.format(name=name, address=remote.address)
        remote.facts_text = ours + "\n".join(
            line for line in captured.splitlines()
            if line.split("=")[0] in ("unitprop", "dropin", "link", "route", "container")
            or line.startswith(("unit=flanneld", "etcd_data="))
        ).replace("node1.etcd", f"{name}.etcd") + "\n"  # fmt: skip
        remote.files = {hp.ETCD_CONF: HAND_CONF.replace(b"{name}", name.encode())}
    found = (FIXTURES / "found-hand-node1.txt").read_text()
    found = found.replace("192.168.255.154", "10.0.0.1").replace("/atomic.io/network", PREFIX)
    remotes["n1"].etcd = found
    return r, remotes


def test_init_refuses_a_cluster_built_by_hand_before_anything_is_made(tmp_path) -> None:
    r, _ = by_hand(tmp_path)
    with pytest.raises(Conflict) as refused:
        facts_phase.Gather().run(r)
    assert str(refused.value) == (
        "n1: this cluster was built by hand (flanneld.service active; etcd.conf not written by "
        "overlayctl; /coreos.com/network/config in the v2 API; the same on n2): run "
        "'overlayctl adopt' (docs/runbooks/adopt.md), which keeps every subnet and container "
        "address"
    )
    assert r.pki is None and r.targets == {} and r.report.plans == {}
    assert not (tmp_path / ".overlayctl").exists() and not list(tmp_path.rglob("ca.crt"))
    assert r.handbuilt is not None and r.handbuilt.v2.leases  # what plan shows


def test_plan_shows_the_cluster_built_by_hand_and_keeps_init_s_plans(tmp_path) -> None:
    r, _ = by_hand(tmp_path)
    facts_phase.Gather(refuse_change=False, write=False).run(r)  # no Conflict: tls, v2 shown
    assert r.handbuilt is not None and (r.handbuilt.refusal() or "").startswith("n1: this")
    assert sorted(r.report.plans) == ["n1", "n2", "n3"]
    assert r.handbuilt.v2.config_key == "/coreos.com/network/config"
    assert [m.name for m in r.handbuilt.etcd.members or ()] == ["node1", "node2"]


def test_a_cluster_overlayctl_made_is_not_refused(tmp_path) -> None:
    r, remotes = rollout(tmp_path)
    ours = (FIXTURES / "facts-ours-node1.txt").read_text()
    for remote in remotes.values():
        remote.facts_text = ours.replace("192.168.255.154", remote.address).replace(
            "hostname=node1", f"hostname={remote.name}"
        )
    members = [{"ID": i, "name": f"n{i}", "peerURLs": [f"http://10.0.0.{i}:2380"]}
               for i in (1, 2, 3)]  # fmt: skip
    listed = json.dumps({"members": members})
    remotes["n1"].etcd = f"client_url=http://127.0.0.1:2379\nmembers_exit=0\nmembers={listed}\n"
    facts_phase.Gather().run(r)  # tls: false in this inventory: http peers are its own
    assert r.handbuilt is not None and not r.handbuilt.found
    assert sorted(r.report.plans) == ["n1", "n2", "n3"]


def test_etcd_found_runs_the_v2_dump_through_plain_http(tmp_path) -> None:
    """etcd-found.sh gets the admin identity, then etcd_v2_dump.py with plain-http endpoints on
    the member itself (v2 is on only where clients are plain http)."""
    r, remotes = rollout(tmp_path, tls=True)
    facts_phase.Gather().run(r)
    (argv,) = [a for a in remotes["n1"].argvs if a[2:3] == [facts_phase.ETCD_FOUND.text]]
    assert argv[4:7] == [hp.CA_CERT, hp.ETCD_ADMIN_CERT, hp.ETCD_ADMIN_KEY]
    assert argv[7:9] == ["python3", "-c"]
    params = json.loads(argv[10])
    assert params["mode"] == "dump" and params["tls"] is None and params["prefix"] == PREFIX
    assert params["endpoints"] == ["http://127.0.0.1:2379", "http://10.0.0.1:2379"]


def test_v2_answers(tmp_path) -> None:
    """etcd_v2_dump.py's exit codes: found, no prefix, v2 off, unreachable."""
    found = (FIXTURES / "found-hand-node1.txt").read_text()
    text = found.split("\nv2=", 1)[1]
    dump = parse_etcd(f"client_url=x\nv2_exit=0\nv2={text}")
    v2 = facts_phase.v2_found(dump, "n1", "/atomic.io/network")
    assert v2.config == '{"Network":"172.21.0.0/16"}' and len(v2.leases) == 2 and not v2.error
    absent = '{"errorCode":100,"message":"Key not found","cause":"/x","index":7} '
    empty = facts_phase.v2_found(parse_etcd(f"client_url=x\nv2_exit=3\nv2={absent}"), "n1", "/x")
    assert (empty.keys, empty.config, empty.leases, empty.error, empty.sign()) == (
        0,
        None,
        (),
        "",
        "",
    )
    off = "etcd_v2_dump: the v2 API is off on this member (404 page not found)"
    assert facts_phase.v2_found(parse_etcd(f"client_url=x\nv2_exit=4\nv2={off}"), "n1",
                                PREFIX) == V2Found()  # fmt: skip
    gone = parse_etcd("client_url=x\nv2_exit=5\nv2=etcd_v2_dump: no etcd endpoint answered")
    assert "no etcd endpoint answered" in facts_phase.v2_found(gone, "n1", PREFIX).error


def ours_with_tls(tmp_path: Path, tls: bool, recorded: str = "https") -> Rollout:
    """An overlayctl cluster made with TLS (its facts and etcd.conf; etcd on n1 listening for
    peers on https), read with an inventory saying TLS; the membership on RECORDED."""
    r, remotes = rollout(tmp_path, tls=tls)
    ours = (FIXTURES / "facts-ours-node1.txt").read_text()
    conf = OURS_HEADER + b'ETCD_LISTEN_PEER_URLS="https://{address}:2380"\n'
    members = [{"ID": i, "name": f"n{i}", "peerURLs": [f"{recorded}://10.0.0.{i}:2380"]}
               for i in (1, 2, 3)]  # fmt: skip
    for remote in remotes.values():
        remote.facts_text = ours.replace("192.168.255.154", remote.address).replace(
            "hostname=node1", f"hostname={remote.name}")  # fmt: skip
        remote.files = {hp.ETCD_CONF: conf.replace(b"{address}", remote.address.encode())}
    listed = json.dumps({"members": members})
    remotes["n1"].etcd = (f"client_url=https://127.0.0.1:2379\npeer_listen=https://10.0.0.1:2380\n"
                          f"members_exit=0\nmembers={listed}\n")  # fmt: skip
    return r


OURS_HEADER = b"# Managed by overlayctl for cluster t; local changes are replaced by the next 'overlayctl init'.\n"  # noqa: E501


def test_a_tls_change_on_a_cluster_overlayctl_made_is_not_called_hand_built(tmp_path) -> None:
    """cluster.tls turned off in the inventory: init names change-network.md, as before."""
    r = ours_with_tls(tmp_path, tls=False)
    with pytest.raises(Conflict, match=r"cluster\.tls cannot change on a running cluster"):
        facts_phase.Gather().run(r)
    assert r.handbuilt is not None and not r.handbuilt.found


def test_issue_21s_broken_state_is_pointed_at_adopt(tmp_path) -> None:
    """etcd.conf rewritten to https by an older init, the membership still http: adopt."""
    r = ours_with_tls(tmp_path, tls=True, recorded="http")
    with pytest.raises(Conflict) as refused:
        facts_phase.Gather().run(r)
    assert str(refused.value).startswith(
        "n1: this cluster was built by hand (etcd's member list has http://10.0.0.1:2380 for n1, "
        "which its etcd does not listen on): run 'overlayctl adopt'"
    )
