"""Pure subnet choice, key layout, value JSON and conflict detection."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.subnet.choice import (
    RANDOM_POOL,
    NoFreeSubnet,
    choose_subnet,
    find_conflicts,
    iter_subnets,
)
from agent.subnet.config import parse_config
from agent.subnet.layout import (
    Lease,
    LeaseDecodeError,
    decode_lease,
    encode_lease_value,
    parse_subnet_key,
    subnet_key,
)

CFG = parse_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}')
ME = IPv4Address("192.168.0.10")


def rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - deterministic test randomness


def lease(subnet: str, ip: str, lease_id: int = 7) -> Lease:
    net = IPv4Network(subnet)
    return Lease(net, IPv4Address(ip), "vxlan", None, lease_id, 1, subnet_key("/p", net))


def test_key_layout_and_value_json() -> None:
    net = IPv4Network("10.1.31.0/24")
    assert subnet_key("/coreos.com/network/", net) == "/coreos.com/network/subnets/10.1.31.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.1.31.0-24") == net
    value = encode_lease_value(ME, "vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"})
    assert value == (
        b'{"PublicIP":"192.168.0.10","BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}'
    )
    assert encode_lease_value(ME, "host-gw", None) == (
        b'{"PublicIP":"192.168.0.10","BackendType":"host-gw"}'
    )
    got = decode_lease("/p/subnets/10.1.31.0-24", value, 5, 9)
    assert (got.subnet, got.public_ip, got.lease_id, dict(got.backend_data or {})) == (
        net,
        ME,
        5,
        {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"},
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("/p/subnets/10.1.31.0-24", b"not json"),
        ("/p/subnets/10.1.31.0-24", b"[]"),
        ("/p/subnets/10.1.31.0-24", b'{"BackendType": "vxlan"}'),
        ("/p/subnets/10.1.31.0-24", b'{"PublicIP": "x"}'),
        ("/p/subnets/10.1.31.0-24", b'{"PublicIP": "1.2.3.4", "BackendData": 5}'),
        ("/p/subnets/garbage", b'{"PublicIP": "1.2.3.4"}'),
        ("/p/subnets/10.1.31.5-24", b'{"PublicIP": "1.2.3.4"}'),
        ("/p/subnets/10.1.31.0-x", b'{"PublicIP": "1.2.3.4"}'),
    ],
)
def test_decode_rejects_junk(key: str, value: bytes) -> None:
    with pytest.raises(LeaseDecodeError):
        decode_lease(key, value)


def test_own_reservation_then_own_lease_first() -> None:
    res = lease("10.1.9.0/24", str(ME), lease_id=0)
    own = lease("10.1.8.0/24", str(ME))
    got = choose_subnet(CFG, [own], [res], ME, IPv4Network("10.1.3.0/24"))
    assert (got.subnet, got.reason, got.existing) == (res.subnet, "own-reservation", res)
    got = choose_subnet(CFG, [own], [], ME, IPv4Network("10.1.3.0/24"))
    assert (got.subnet, got.reason) == (own.subnet, "own-lease")


# The subnet ME's address points at: 192.168.0.10 is 3232235530, modulo 255 subnets 115.
BY_ADDRESS = IPv4Network("10.1.116.0/24")
ADDRESS_TAKEN = lease(str(BY_ADDRESS), "192.168.0.40")


def test_own_lease_outside_config_is_ignored() -> None:
    stale = lease("10.2.8.0/24", str(ME))
    got = choose_subnet(CFG, [stale], [], ME, None, rng(1))
    assert (got.subnet, got.reason) == (BY_ADDRESS, "address")


def test_neighbouring_addresses_point_at_different_subnets() -> None:
    got = [
        choose_subnet(CFG, [], [], IPv4Address(f"192.168.0.{i}"), None).subnet
        for i in range(1, 255)
    ]
    assert len(set(got)) == 254 and all(CFG.contains_subnet(net) for net in got)
    taken = [ADDRESS_TAKEN]
    assert choose_subnet(CFG, taken, [], ME, None, rng(1)).reason == "random"
    lost = choose_subnet(CFG, [], [], ME, None, rng(1), exclude=[BY_ADDRESS])
    assert lost.reason == "random" and lost.subnet != BY_ADDRESS


def test_previous_subnet_if_free_and_inside() -> None:
    prev = IPv4Network("10.1.77.0/24")
    assert choose_subnet(CFG, [], [], ME, prev).reason == "previous"
    taken = [lease("10.1.77.0/24", "192.168.0.11")]
    assert choose_subnet(CFG, taken, [], ME, prev, rng(1)).reason == "address"
    reserved = [lease("10.1.77.0/24", "192.168.0.11", 0)]
    assert choose_subnet(CFG, [], reserved, ME, prev, rng(1)).subnet != prev
    for outside in ("10.2.77.0/24", "10.1.0.0/24", "10.1.77.0/25"):
        got = choose_subnet(CFG, [ADDRESS_TAKEN], [], ME, IPv4Network(outside), rng(1))
        assert got.reason == "random"


def test_random_among_first_free_only() -> None:
    leases = [lease(f"10.1.{i}.0/24", f"192.168.1.{i}") for i in range(1, 11)] + [ADDRESS_TAKEN]
    seen = {choose_subnet(CFG, leases, [], ME, None, rng(seed)).subnet for seed in range(300)}
    first_free = [n for n in iter_subnets(CFG) if n != BY_ADDRESS][10 : 10 + RANDOM_POOL]
    assert seen <= set(first_free)
    assert len(seen) > 50


def test_other_hosts_reservations_never_chosen() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/22", "SubnetLen": 24}')
    res = [lease("10.1.1.0/24", "192.168.0.99", 0), lease("10.1.2.0/24", "192.168.0.98", 0)]
    for seed in range(50):
        got = choose_subnet(cfg, [], res, ME, IPv4Network("10.1.1.0/24"), rng(seed))
        assert got.subnet == IPv4Network("10.1.3.0/24")


def test_overlapping_odd_sized_lease_is_taken() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/22", "SubnetLen": 24}')
    odd = [lease("10.1.1.128/25", "192.168.0.99"), lease("10.1.2.0/23", "192.168.0.98")]
    with pytest.raises(NoFreeSubnet):
        choose_subnet(cfg, odd, [], ME, None)


def test_exclude_lost_race() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/22", "SubnetLen": 24}')
    got = choose_subnet(
        cfg, [], [], ME, IPv4Network("10.1.1.0/24"), exclude=[IPv4Network("10.1.1.0/24")]
    )
    assert got.subnet != IPv4Network("10.1.1.0/24")


def test_no_free_subnet() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/22", "SubnetLen": 24}')
    full = [lease(f"10.1.{i}.0/24", f"192.168.1.{i}") for i in range(1, 4)]
    with pytest.raises(NoFreeSubnet, match="no free subnet"):
        choose_subnet(cfg, full, [], ME, None)


def test_large_network_is_fast() -> None:
    cfg = parse_config('{"Network": "10.0.0.0/8", "SubnetLen": 24}')
    leases = [lease(f"10.0.{i}.0/24", f"192.168.{i}.1") for i in range(1, 256)]
    got = choose_subnet(cfg, leases, [], ME, None, rng(3))
    assert got.subnet.network_address >= IPv4Address("10.1.0.0")


def test_conflicts() -> None:
    leases = [
        lease("10.1.1.0/24", "192.168.0.1"),
        lease("10.1.2.0/24", "192.168.0.1"),
        lease("10.1.3.0/24", "192.168.0.3"),
        lease("10.1.3.128/25", "192.168.0.4"),
        lease("10.1.4.0/24", "192.168.0.5"),
    ]
    kinds = sorted((c.kind, c.subnets) for c in find_conflicts(leases))
    assert kinds == [
        ("duplicate-public-ip", (IPv4Network("10.1.1.0/24"), IPv4Network("10.1.2.0/24"))),
        ("overlapping-subnets", (IPv4Network("10.1.3.0/24"), IPv4Network("10.1.3.128/25"))),
    ]
    assert find_conflicts(leases[2:3] + leases[4:]) == []


def test_value_round_trip_is_flannel_json() -> None:
    raw = encode_lease_value("10.0.0.1", "udp", None)
    assert json.loads(raw) == {"PublicIP": "10.0.0.1", "BackendType": "udp"}
