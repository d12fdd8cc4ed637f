"""The agent's two hand-written wire formats, without a kernel or an etcd: rtnetlink
attributes (agent/net/rtnl.py) and the etcd JSON gateway's encodings and errors
(agent/etcd/session.py).
"""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

import pytest

from agent.etcd.session import b64, prefix_end, reply_error, unb64
from agent.etcd.types import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
)
from agent.net import rtnl
from agent.net.netlink import _link_facts


def test_attributes_are_padded_and_read_back() -> None:
    packed = rtnl.text(3, "vx") + rtnl.u8(7, 0) + rtnl.be16(15, 8472) + rtnl.ipv4(4, "10.0.0.1")
    assert len(packed) % 4 == 0
    found = rtnl.attributes(packed)
    assert rtnl.as_text(found[3]) == "vx"
    assert found[7] == b"\0"
    assert struct.unpack("!H", found[15]) == (8472,)
    assert rtnl.as_ipv4(found[4]) == IPv4Address("10.0.0.1")


def test_truncated_attribute_stops_the_parse() -> None:
    good = rtnl.u32(4, 1500)
    bad = struct.pack("=HH", 64, 5) + b"\0" * 4  # claims 64 bytes, has 8
    assert rtnl.attributes(good + bad) == {4: struct.pack("=I", 1500)}


def test_nested_flag_is_ignored_in_the_type() -> None:
    nested = struct.pack("=HH", 8, 18 | 0x8000) + b"abcd"
    assert rtnl.attributes(nested) == {18: b"abcd"}


def test_link_facts_decode_a_vxlan_link() -> None:
    data = (
        rtnl.u32(1, 1) + rtnl.u32(3, 2) + rtnl.ipv4(4, "192.168.0.5")
        + rtnl.u8(7, 0) + rtnl.be16(15, 8472)
    )  # fmt: skip
    linkinfo = rtnl.attr(1, b"vxlan") + rtnl.attr(2, data)
    payload = (
        rtnl.IFINFOMSG.pack(0, 1, 9, rtnl.IFF_UP, 0)
        + rtnl.text(3, "flannel.1") + rtnl.u32(4, 1450)
        + rtnl.mac(1, "aa:bb:cc:00:11:22") + rtnl.attr(18, linkinfo)
    )  # fmt: skip
    facts = _link_facts(payload)
    assert facts["name"] == "flannel.1" and facts["index"] == 9 and facts["up"]
    assert facts["mac"] == "aa:bb:cc:00:11:22" and facts["mtu"] == 1450
    assert facts["kind"] == "vxlan"
    assert facts["data"] == {
        "IFLA_VXLAN_ID": 1, "IFLA_VXLAN_LINK": 2, "IFLA_VXLAN_LOCAL": "192.168.0.5",
        "IFLA_VXLAN_LEARNING": 0, "IFLA_VXLAN_PORT": 8472,
    }  # fmt: skip


def test_netlink_error_names_the_request() -> None:
    err = rtnl.NetlinkError(errno.EEXIST, "route 10.1.2.0/24")
    assert err.code == errno.EEXIST and "route 10.1.2.0/24: File exists" in str(err)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("/coreos.com/network/", b"/coreos.com/network0"), ("a", b"b"), ("", b"\0")],
)
def test_prefix_range_end(prefix: str, end: bytes) -> None:
    assert unb64(prefix_end(prefix)) == end


def test_bytes_fields_round_trip() -> None:
    assert unb64(b64("10.1.2.0-24")) == b"10.1.2.0-24"
    assert unb64(None) == b""


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (404, b'{"code":5,"message":"etcdserver: requested lease not found"}', EtcdLeaseNotFound),
        (400, b'{"code":11,"message":"mvcc: required revision has been compacted"}', EtcdCompacted),
        (400, b'{"code":3,"message":"etcdserver: user name is empty"}', EtcdAuthError),
        (401, b'{"code":16,"message":"etcdserver: invalid auth token"}', EtcdAuthError),
        (503, b'{"code":14,"message":"etcdserver: leader changed"}', EtcdUnavailable),
        (400, b"Client sent an HTTP request to an HTTPS server.", EtcdError),
    ],
)
def test_gateway_errors_map_to_our_exceptions(status: int, body: bytes, kind: type) -> None:
    err = reply_error(status, body)
    assert type(err) is kind
