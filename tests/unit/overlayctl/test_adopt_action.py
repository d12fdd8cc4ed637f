"""adopt's pure decisions (actions/adopt.py): the etcd version it refuses, the scheme etcd's
clients are reached at, the peer lines and the subnet each host keeps; and etcd-found.sh's
version line as plan/handbuilt.py reads it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from overlayctl.actions import adopt
from overlayctl.errors import Conflict, ExitCode
from overlayctl.etcd.v2_import import ImportPlan
from overlayctl.inventory.load import parse_inventory
from overlayctl.plan.handbuilt import EtcdFound, HandBuilt, Member, parse_etcd


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
