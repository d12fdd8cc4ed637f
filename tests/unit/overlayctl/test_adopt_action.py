"""adopt's pure decisions (actions/adopt.py): the etcd version it refuses, the scheme etcd's
clients are reached at, the peer lines and the subnet each host keeps; and etcd-found.sh's
version line as plan/handbuilt.py reads it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from overlayctl import paths as hp
from overlayctl.actions import adopt
from overlayctl.errors import Conflict, ExitCode
from overlayctl.etcd.v2_import import ImportPlan
from overlayctl.inventory.load import parse_inventory
from overlayctl.plan.facts import RemoteFile, UnitState
from overlayctl.plan.handbuilt import (
    EtcdFound,
    Flanneld,
    HandBuilt,
    HostHandBuilt,
    Member,
    parse_etcd,
)
from overlayctl.plan.takeover import daemon_json_refusals


@pytest.mark.parametrize(
    ("version", "old"),
    [("3.3.11", True), ("3.2.0", True), ("2.3.8", True), ("3.4.0", False), ("3.4.23", False),
     ("3.5.17", False), ("4.0.0", False), ("", False), ("garbage", False), ("3", False)],
)  # fmt: skip
def test_etcd_older_than_3_4_is_too_old_and_an_unread_version_is_not(version, old) -> None:
    assert adopt.too_old(version) is old


def _rollout(etcd: EtcdFound, tls: bool = True) -> SimpleNamespace:
    inv = SimpleNamespace(cluster=SimpleNamespace(tls=tls))
    return SimpleNamespace(handbuilt=HandBuilt(etcd=etcd, via="node1"), inv=inv)


def test_centos7_etcd_is_refused_naming_the_member_and_the_way_forward() -> None:
    rollout = _rollout(EtcdFound(client_url="http://127.0.0.1:2379", version="3.3.11"))
    with pytest.raises(Conflict) as refused:
        adopt.refuse_old_etcd(rollout)  # type: ignore[arg-type]
    assert refused.value.code == ExitCode.CONFLICT
    assert str(refused.value).startswith("node1: etcd 3.3.11 runs there; adopt needs etcd 3.4 ")
    assert "upgrade etcd member by member first" in str(refused.value)
    adopt.refuse_old_etcd(_rollout(EtcdFound(version="3.4.23")))  # type: ignore[arg-type]


def test_the_version_line_of_etcd_found_is_read() -> None:
    text = "client_url=http://127.0.0.1:2379\npeer_listen=http://0.0.0.0:2380\nversion=3.4.23\n"
    assert parse_etcd(text).version == "3.4.23"
    assert parse_etcd("client_url=http://127.0.0.1:2379\n").version == ""


def test_etcd_is_reached_over_http_until_its_clients_serve_https() -> None:
    doc = {"cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian"},
           "hosts": [{"name": "n1", "address": "10.0.0.1"}]}  # fmt: skip
    inv = parse_inventory(doc, Path("/nonexistent"))[0]
    plain = SimpleNamespace(handbuilt=HandBuilt(etcd=EtcdFound("http://127.0.0.1:2379")), inv=inv)
    tls = SimpleNamespace(handbuilt=HandBuilt(etcd=EtcdFound("https://127.0.0.1:2379")), inv=inv)
    assert adopt.reach(tls) is inv  # type: ignore[arg-type]
    reached = adopt.reach(plain)  # type: ignore[arg-type]
    assert inv.cluster.tls and reached.cluster.tls is False
    assert reached.hosts == inv.hosts


def _member(name: str, scheme: str) -> Member:
    return Member(f"{name}id", name, (f"{scheme}://10.0.0.{name[-1]}:2380",), ())


def test_peer_lines_say_what_moves_and_warn_of_two_members_without_quorum() -> None:
    two = EtcdFound("http://127.0.0.1:2379", members=(_member("node1", "http"),
                                                       _member("node2", "http")))  # fmt: skip
    lines = adopt.peer_lines(_rollout(two))  # type: ignore[arg-type]
    assert lines[0] == "member node1 (node1id): peers http://10.0.0.1:2380"
    assert "2 peer URLs to https, member by member" in lines[2]
    assert lines[3] == "2 members: each member's restart is a few seconds without quorum"
    done = EtcdFound("https://127.0.0.1:2379", members=tuple(
        _member(f"node{i}", "https") for i in (1, 2, 3)))  # fmt: skip
    assert adopt.peer_lines(_rollout(done))[-1] == "every peer URL is https already"  # type: ignore[arg-type]
    assert adopt.peer_lines(_rollout(EtcdFound()))[0].startswith("members not read")  # type: ignore[arg-type]
    plain = adopt.peer_lines(_rollout(two, tls=False))  # type: ignore[arg-type]
    assert plain == ["cluster.tls is off: peer URLs stay as they are"]


def test_each_public_ip_keeps_the_subnet_its_v2_lease_names() -> None:
    subnets = "/atomic.io/network/subnets/"
    plan = ImportPlan(want=((f"{subnets}172.21.31.0-24", "192.168.255.154"),
                            (f"{subnets}172.21.9.0-24", "192.168.255.155")))  # fmt: skip
    assert adopt._subnets(plan, "/atomic.io/network") == {
        "192.168.255.154": "172.21.31.0/24",
        "192.168.255.155": "172.21.9.0/24",
    }
    assert adopt._subnets(None, "/atomic.io/network") == {}
    lines = adopt.AdoptPlan(peers=["p"], imports=None, takeovers={"node1": []}).lines()
    assert lines == ["etcd: p", "v2: the v2 API is off: nothing to import",
                     "node1: taken over already"]  # fmt: skip


def _cluster(tmp: Path, roles: dict[str, list[str]] | None = None):  # type: ignore[no-untyped-def]
    roles = roles or {}
    hosts = [{"name": n, "address": f"10.0.0.{i}", "roles": roles.get(n, ["etcd", "node"])}
             for i, n in ((1, "node1"), (2, "node2"), (3, "node3"))]  # fmt: skip
    doc = {"cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian"}, "hosts": hosts}
    return parse_inventory(doc, tmp)[0]


def _etcd_target(name: str, data_dirs: set[str], conf: bytes | None) -> SimpleNamespace:
    change = SimpleNamespace(path=hp.ETCD_CONF, current=RemoteFile(hp.ETCD_CONF, conf))
    facts = SimpleNamespace(etcd_data_dirs=frozenset(data_dirs))
    files = [change] if conf is not None else []
    return SimpleNamespace(name=name, facts=facts, plan=SimpleNamespace(files=files))


def test_members_and_data_dirs_the_peer_move_would_break_on_are_refused(tmp_path: Path) -> None:
    inv = _cluster(tmp_path)
    members = (Member("a1", "node1", ("http://10.0.0.1:2380",), ()),
               Member("b2", "etcd2", ("http://10.0.0.2:2380",), ()),
               Member("c3", "node9", ("http://10.0.0.9:2380",), ()))  # fmt: skip
    ours = hp.etcd_data_dir("node1")
    targets = [
        _etcd_target("node1", {ours}, f"ETCD_DATA_DIR={ours}".encode()),
        _etcd_target("node2", {"/var/lib/etcd/default.etcd"}, b'ETCD_NAME=etcd2\n'),
        _etcd_target("node3", set(), b'ETCD_DATA_DIR="/data/etcd"\n'),
    ]  # fmt: skip
    rollout = SimpleNamespace(inv=inv, handbuilt=HandBuilt(etcd=EtcdFound(members=members)),
                              live=lambda runs_on=None: targets)  # fmt: skip
    found = adopt.etcd_refusals(rollout)  # type: ignore[arg-type]
    assert found[0] == ("node2: etcd calls this member 'etcd2': name the host etcd2 in the "
                        "inventory (members keep their names)")  # fmt: skip
    assert found[1].startswith("etcd member node9 (c3, peers http://10.0.0.9:2380) is no etcd host")
    assert found[2].startswith("node2: etcd's data is in /var/lib/etcd/default.etcd, not in "
                               "/var/lib/etcd/node2.etcd")  # fmt: skip
    assert found[3].startswith("node3: etcd's data is in /data/etcd, not in")
    assert len(found) == 4  # node1 is where overlayctl keeps it: fine
    # an adopted (or overlayctl-made) cluster: our file, our folder, our names
    ours = [_etcd_target(n, {hp.etcd_data_dir(n)}, None) for n in ("node1", "node2", "node3")]
    named = tuple(Member(f"{n}id", n, (f"https://10.0.0.{n[-1]}:2380",), ())
                  for n in ("node1", "node2", "node3"))  # fmt: skip
    clean = SimpleNamespace(inv=inv, handbuilt=HandBuilt(etcd=EtcdFound(members=named)),
                            live=lambda runs_on=None: ours)  # fmt: skip
    assert adopt.etcd_refusals(clean) == []  # type: ignore[arg-type]


def test_flanneld_on_a_host_without_the_node_role_is_refused(tmp_path: Path) -> None:
    inv = _cluster(tmp_path, {"node3": ["etcd"]})
    running = HostHandBuilt(flanneld=Flanneld(UnitState("active", "enabled"), "/x"))
    found = HandBuilt(hosts={"node1": running, "node3": running})
    out = adopt.flanneld_off_node(SimpleNamespace(inv=inv, handbuilt=found))  # type: ignore[arg-type]
    assert out == ["node3: flanneld runs here, but the inventory does not make node3 a node host "
                   "(roles: [etcd, node]): add the role, or stop and disable flanneld there, "
                   "then re-run"]  # fmt: skip
    idle = HandBuilt(hosts={"node3": HostHandBuilt()})
    assert adopt.flanneld_off_node(SimpleNamespace(inv=inv, handbuilt=idle)) == []  # type: ignore[arg-type]


def test_daemon_json_network_keys_are_refused_before_docker_would_not_start() -> None:
    assert daemon_json_refusals(None) == [] and daemon_json_refusals("") == []
    assert daemon_json_refusals('{"storage-driver": "vfs", "log-driver": "journald"}') == []
    (line,) = daemon_json_refusals('{"mtu": 1472, "bip": "172.21.31.1/24"}')
    assert line.startswith("/etc/docker/daemon.json sets bip, mtu: the agent's flags")
    (bad,) = daemon_json_refusals("{not json")
    assert "is not valid JSON" in bad
