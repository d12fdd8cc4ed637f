"""flannel's subnet defaults are written twice: in the inventory (overlayctl/inventory/network.py,
for its checks and the config it writes) and in the agent (agent/subnet/config.py), which must
never import overlayctl. Here both answer for every Network prefix and SubnetLen, so they cannot
drift apart."""

from __future__ import annotations

import ipaddress
import json

import pytest

from agent.subnet.config import parse_config
from overlayctl.inventory.network import flannel_defaults

NETWORKS = [f"10.0.0.0/{p}" for p in range(8, 17)] + [
    "172.21.0.0/16",
    "192.168.0.0/20",
    "192.168.128.0/22",
    "192.168.64.0/23",
    "192.168.1.0/24",
    "192.168.1.64/26",
]


@pytest.mark.parametrize("network", NETWORKS)
def test_default_subnet_len_min_and_max_agree(network: str) -> None:
    net = ipaddress.IPv4Network(network)
    agent = parse_config(json.dumps({"Network": network}))
    assert flannel_defaults(net) == (agent.subnet_len, agent.subnet_min, agent.subnet_max)


@pytest.mark.parametrize("network", ["10.0.0.0/8", "172.21.0.0/16", "192.168.0.0/22"])
def test_min_and_max_agree_for_every_subnet_len(network: str) -> None:
    net = ipaddress.IPv4Network(network)
    for subnet_len in range(net.prefixlen + 2, 31):
        agent = parse_config(json.dumps({"Network": network, "SubnetLen": subnet_len}))
        assert flannel_defaults(net, subnet_len) == (subnet_len, agent.subnet_min, agent.subnet_max)
