"""etcdctl command lines and parsers, on output captured from etcd 3.4 in the lab."""

from __future__ import annotations

import shlex
from pathlib import Path

from overlayctl.etcd import etcdctl
from overlayctl.inventory import parse_inventory

MEMBERS = '{"header":{"cluster_id":1,"member_id":810089443374648463,"raft_term":2},"members":[{"ID":810089443374648463,"name":"node1","peerURLs":["https://192.168.255.154:2380"],"clientURLs":["https://192.168.255.154:2379"]},{"ID":5567339973973005985,"name":"node2","peerURLs":["https://192.168.255.155:2380"],"clientURLs":["https://192.168.255.155:2379"]}]}'
HEALTH = '[{"endpoint":"https://192.168.255.155:2379","health":true,"took":"6.3ms"},{"endpoint":"https://192.168.255.154:2379","health":false,"took":"5s","error":"context deadline exceeded"}]'  # noqa: E501
STATUS = '[{"Endpoint":"https://192.168.255.154:2379","Status":{"header":{"cluster_id":1,"member_id":810089443374648463,"revision":2,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":810089443374648463}}]'
GET = '{"header":{"revision":2},"kvs":[{"key":"L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc=","version":1,"value":"eyJOZXR3b3JrIjoiMTcyLjIxLjAuMC8xNiIsIkJhY2tlbmQiOnsiVHlwZSI6InZ4bGFuIn19"}],"count":1}'  # noqa: E501


def inv(tls: bool = True):
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "tls": tls, "os": "debian"},
        "hosts": [{"name": "node1", "address": "192.168.255.154"},
                  {"name": "node2", "address": "192.168.255.155"}],
    }  # fmt: skip
    return parse_inventory(doc, Path("/nonexistent"))[0]


def test_parsers_read_real_etcd_output() -> None:
    members = etcdctl.parse_members(MEMBERS)
    assert [m.name for m in members] == ["node1", "node2"]
    assert members[0].id == f"{810089443374648463:x}"
    health = {h.endpoint: h for h in etcdctl.parse_health(HEALTH)}
    assert health["https://192.168.255.155:2379"].healthy
    assert health["https://192.168.255.154:2379"].error == "context deadline exceeded"
    (status,) = etcdctl.parse_status(STATUS)
    assert status.leader_id == status.member_id and status.db_size == 20480
    assert etcdctl.parse_get(GET) == '{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}'
    assert etcdctl.parse_get('{"header":{},"count":0}') is None


def test_tls_flags_follow_the_inventory() -> None:
    with_tls = etcdctl.member_list(inv(True))
    assert "--cacert=/etc/overlayctl/pki/ca.crt" in with_tls
    assert "--endpoints=https://192.168.255.154:2379,https://192.168.255.155:2379" in with_tls
    plain = etcdctl.member_list(inv(False))
    assert not any(a.startswith("--cacert") for a in plain)
    assert "--endpoints=http://192.168.255.154:2379,http://192.168.255.155:2379" in plain


def test_operator_command_is_a_shell_line_to_paste() -> None:
    line = etcdctl.operator_command(inv(), "endpoint", "health")
    assert line.startswith("ETCDCTL_API=3 etcdctl --endpoints=https://192.168.255.154:2379,")
    assert shlex.split(line)[-2:] == ["endpoint", "health"]


def test_txn_input_quotes_json_for_etcdctl() -> None:
    text = etcdctl.txn_stdin("/p/config", '{"Network":"10.1.0.0/16"}', only_if_absent=True)
    assert text == (
        'version("/p/config") = "0"\n\nput /p/config "{\\"Network\\":\\"10.1.0.0/16\\"}"\n\n\n'
    )
    assert not etcdctl.txn_stdin("/k", "v", only_if_absent=False).startswith("version")
