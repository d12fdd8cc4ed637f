"""Pure parts of the data plane: interface choice, iptables rule specs, peer checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from agent.backends.peers import skip_reason, stale_routes
from agent.net.iface import InterfaceError, LinkInfo, select_interface
from agent.net.iptables import forward_rules, masq_rules
from agent.net.netlink import Route
from agent.subnet.config import parse_config
from agent.subnet.layout import Lease

LO = LinkInfo("lo", 1, 65536, (IPv4Interface("127.0.0.1/8"),), loopback=True)
NAT = LinkInfo("eth0", 2, 1500, (IPv4Interface("10.0.2.15/24"),))
LAB = LinkInfo("eth1", 3, 9000, (IPv4Interface("192.168.255.154/24"),))
BARE = LinkInfo("eth2", 4, 1500, ())
LINKS = [LO, NAT, LAB, BARE]


def test_default_is_the_default_route_interface() -> None:
    got = select_interface(LINKS, default_route_index=2)
    assert (got.name, got.index, str(got.address), str(got.public_ip), got.mtu) == (
        "eth0",
        2,
        "10.0.2.15",
        "10.0.2.15",
        1500,
    )


def test_without_default_route_the_first_non_loopback_with_ipv4() -> None:
    assert select_interface(LINKS, default_route_index=None).name == "eth0"
    assert select_interface([LO, BARE, LAB], None).name == "eth1"


def test_iface_by_name_or_address_in_order_and_public_ip() -> None:
    assert select_interface(LINKS, 2, ifaces=["eth1"]).mtu == 9000
    got = select_interface(LINKS, 2, ifaces=["nope", "192.168.255.154"], public_ip="203.0.113.7")
    assert got.name == "eth1" and got.public_ip == IPv4Address("203.0.113.7")
    assert got.address == IPv4Address("192.168.255.154")


def test_iface_regex_matches_addresses_first_then_names() -> None:
    assert select_interface(LINKS, 2, regexes=[r"^192\.168\."]).name == "eth1"
    assert select_interface(LINKS, 2, regexes=["eth1"]).name == "eth1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ifaces": ["wlan0"]}, "no interface matches --iface wlan0; interfaces: lo (127.0.0.1)"),
        ({"ifaces": ["eth2"]}, "--iface eth2: the interface has no IPv4 address"),
        ({"regexes": ["("]}, "--iface-regex '(' is not a valid expression"),
        ({"public_ip": "x"}, "--public-ip 'x' is not an IPv4 address"),
    ],
)
def test_clear_one_line_errors(kwargs, message) -> None:
    with pytest.raises(InterfaceError) as err:
        select_interface(LINKS, 2, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nothing_usable() -> None:
    with pytest.raises(InterfaceError, match="no usable interface"):
        select_interface([LO, BARE], None)


def test_forward_and_masq_rules_are_flannels() -> None:
    jump, body = forward_rules(IPv4Network("10.5.0.0/16"))
    assert jump.chain == "FORWARD" and jump.spec[-2:] == ("-j", "FLANNEL-FWD")
    assert [r.spec[:2] for r in body] == [("-s", "10.5.0.0/16"), ("-d", "10.5.0.0/16")]
    jump, body = masq_rules(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.1.0/24"), True)
    assert (jump.table, jump.chain) == ("nat", "POSTROUTING")
    assert [r.spec[-1] for r in body] == ["RETURN"] * 3 + ["--random-fully"] * 2
    assert body[3].spec[2:5] == ("!", "-d", "224.0.0.0/4")


def _lease(subnet: str, ip: str = "192.168.255.155", kind: str = "vxlan") -> Lease:
    return Lease(IPv4Network(subnet), IPv4Address(ip), kind, {"VNI": 1})


def test_peer_checks_and_stale_routes() -> None:
    config = parse_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
    own = _lease("10.5.1.0/24", ip="192.168.255.154")
    assert skip_reason(_lease("10.5.2.0/24"), "vxlan", config, own) == ""
    assert skip_reason(own, "vxlan", config, own) is None
    assert "backend type is 'udp'" in str(
        skip_reason(_lease("10.5.3.0/24", kind="udp"), "vxlan", config, own)
    )
    dup = _lease("10.5.4.0/24", ip=str(own.public_ip))
    assert "duplicate PublicIP" in str(skip_reason(dup, "vxlan", config, own))
    assert "outside the Network" in str(skip_reason(_lease("10.6.3.0/24"), "vxlan", config, own))
    routes = [
        Route(IPv4Network(x), None, 5, True)
        for x in ("10.5.2.0/24", "10.5.3.0/24", "10.5.0.0/16", "192.168.1.0/24")
    ]
    stale = stale_routes(routes, config.network, {IPv4Network("10.5.2.0/24")})
    assert [str(r.dst) for r in stale] == ["10.5.3.0/24"]
