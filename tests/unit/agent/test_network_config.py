"""flannel network config: defaults, case-insensitive keys, validation wording."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.subnet.config import ConfigError, parse_config


def test_defaults_for_a_16() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/16"}')
    assert cfg.network == IPv4Network("10.1.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.subnet_min == IPv4Address("10.1.1.0")
    assert cfg.subnet_max == IPv4Address("10.1.255.0")
    assert cfg.backend_type == "vxlan"
    assert cfg.backend["VNI"] == 1
    assert cfg.backend["Port"] == 8472


def test_missing_backend_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    parse_config('{"Network": "10.1.0.0/16"}')
    assert "no Backend" in caplog.text
    assert "vxlan" in caplog.text


@pytest.mark.parametrize(
    ("network", "subnet_len", "smin", "smax"),
    [
        ("10.0.0.0/22", 24, "10.0.1.0", "10.0.3.0"),
        ("10.0.0.0/23", 25, "10.0.0.128", "10.0.1.128"),
        ("10.0.0.0/28", 30, "10.0.0.4", "10.0.0.12"),
        ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
    ],
)
def test_subnet_len_default(network: str, subnet_len: int, smin: str, smax: str) -> None:
    cfg = parse_config(json.dumps({"Network": network}))
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (subnet_len, smin, smax)


def test_keys_are_case_insensitive() -> None:
    cfg = parse_config(
        '{"network": "172.21.0.0/16", "SUBNETLEN": 26, "subnetmin": "172.21.1.0",'
        ' "backend": {"type": "udp", "port": 9000}}'
    )
    assert cfg.subnet_len == 26
    assert cfg.subnet_min == IPv4Address("172.21.1.0")
    assert cfg.backend_type == "udp"
    assert cfg.backend["Port"] == 9000


def test_backend_defaults() -> None:
    udp = parse_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "udp"}}')
    assert udp.backend["Port"] == 8285
    hgw = parse_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert hgw.backend_type == "host-gw"
    vx = parse_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": 42}}')
    assert (vx.backend["VNI"], vx.backend["Port"]) == (42, 8472)


def test_host_bits_in_network_are_masked() -> None:
    assert parse_config('{"Network": "10.1.2.3/16"}').network == IPv4Network("10.1.0.0/16")


def test_config_is_frozen() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/16"}')
    with pytest.raises(AttributeError):
        cfg.subnet_len = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.backend["VNI"] = 3  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "please define a correct Network parameter"),
        ('{"Network": "banana"}', "please define a correct Network parameter"),
        ('{"Network": "10.1.0.0"}', "please define a correct Network parameter"),
        ('{"Network": 17}', "please define a correct Network parameter"),
        ('{"Network": "fd00::/64"}', "please define a correct Network parameter"),
        ('{"Network": "10.1.0.0/16", "SubnetLen": 31}', "SubnetLen must be less than /31"),
        (
            '{"Network": "10.1.0.0/16", "SubnetLen": 17}',
            "network must be able to accommodate at least four subnets",
        ),
        ('{"Network": "10.1.0.0/29"}', "network is too small"),
        ('{"Network": "10.1.0.0/16", "SubnetLen": "24"}', "SubnetLen"),
        (
            '{"Network": "10.1.0.0/16", "SubnetMin": "10.2.0.0"}',
            "SubnetMin is not in the range of the Network",
        ),
        (
            '{"Network": "10.1.0.0/16", "SubnetMax": "10.2.0.0"}',
            "SubnetMax is not in the range of the Network",
        ),
        (
            '{"Network": "10.1.0.0/16", "SubnetMin": "10.1.1.7"}',
            "SubnetMin is not on a SubnetLen boundary: 10.1.1.7",
        ),
        (
            '{"Network": "10.1.0.0/16", "SubnetMax": "10.1.1.7"}',
            "SubnetMax is not on a SubnetLen boundary: 10.1.1.7",
        ),
        ('{"Network": "10.1.0.0/16", "SubnetMin": "nope"}', "SubnetMin"),
        ('{"Network": "10.1.0.0/16", "Backend": {"Type": "ipsec"}}', "unknown backend type"),
        ('{"Network": "10.1.0.0/16", "Backend": "vxlan"}', "Backend"),
        ('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": "x"}}', "VNI"),
        ('{"Network": "10.1.0.0/16", "Backend": {"Type": "udp", "Port": 70000}}', "Port"),
        ("[" * 100000, "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_invalid_configs(text: str | bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(text)


def test_contains_subnet() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/16", "SubnetMin": "10.1.5.0"}')
    assert cfg.contains_subnet(IPv4Network("10.1.5.0/24"))
    assert not cfg.contains_subnet(IPv4Network("10.1.4.0/24"))
    assert not cfg.contains_subnet(IPv4Network("10.1.5.0/25"))
    assert not cfg.contains_subnet(IPv4Network("10.2.5.0/24"))
