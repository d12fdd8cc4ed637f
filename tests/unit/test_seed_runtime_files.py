"""The seed's runtime files (section 5.6.5 and 5.7) come out of our agent for the seed's config:
subnet.env with FLANNEL_MTU=1472 for udp on a 1500-byte NIC, and docker's flags."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from agent.backends import ExternalInterface, make_backend
from agent.files import SubnetEnv, format_docker_opts, format_subnet_env, parse_env
from agent.subnet.config import parse_config
from overlayctl.inventory import load_inventory
from overlayctl.inventory.network import network_config_json
from tests.unit.overlayctl.test_render import SEED

NIC = ExternalInterface("ens33", 2, IPv4Address("192.168.255.154"),
                        IPv4Address("192.168.255.154"), 1500)  # fmt: skip


def seed_env(subnet: str) -> SubnetEnv:
    inv, _ = load_inventory(SEED / "cluster.yaml")
    config = parse_config(network_config_json(inv))  # what init writes, as the agent reads it
    backend = make_backend(config, NIC)
    return SubnetEnv(config.network, IPv4Network(subnet), backend.mtu, ipmasq=False)


def test_subnet_env_is_the_seeds() -> None:
    for subnet, text in (("172.21.31.0/24", "FLANNEL_SUBNET=172.21.31.1/24"),
                         ("172.21.55.0/24", "FLANNEL_SUBNET=172.21.55.1/24")):  # fmt: skip
        assert format_subnet_env(seed_env(subnet)) == (
            f"FLANNEL_NETWORK=172.21.0.0/16\n{text}\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
        )


def test_docker_flags_are_the_seeds() -> None:
    opts = parse_env(format_docker_opts(seed_env("172.21.31.0/24")))
    # The seed's ExecStart: ... --bip=172.21.31.1/24 --ip-masq=true --mtu=1472
    assert opts["DOCKER_NETWORK_OPTIONS"].split() == [
        "--bip=172.21.31.1/24",
        "--ip-masq=true",
        "--mtu=1472",
    ]
