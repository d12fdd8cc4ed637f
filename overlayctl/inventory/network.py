"""flannel's network config as the inventory defines it: the value `init` writes into etcd.

flannel's subnet defaults (SubnetLen, SubnetMin, SubnetMax) are written here for the inventory's
own checks and again in the agent (agent/subnet/config.py), which must never import overlayctl;
tests/unit/overlayctl/test_flannel_defaults.py holds the two to the same answers.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from overlayctl.inventory.model import BACKEND_OPTIONS, Inventory


def flannel_defaults(
    network: ipaddress.IPv4Network, subnet_len: int | None = None
) -> tuple[int, ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """flannel's SubnetLen, SubnetMin and SubnetMax for `network` (SubnetLen as given if given)."""
    if subnet_len is None:
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    size = 1 << (32 - subnet_len)
    first = network.network_address + size
    last = ipaddress.IPv4Address(int(network.broadcast_address) + 1 - size)
    return subnet_len, first, last


def network_config_key(inv: Inventory) -> str:
    """The etcd key the network config JSON lives at."""
    return f"{inv.cluster.etcd_prefix}/config"


def network_config(inv: Inventory) -> dict[str, Any]:
    """flannel's network config. Keys equal to flannel's defaults are left out; Backend is always
    given (flannel itself would fall back to udp, our agent to vxlan: being explicit avoids both).
    """
    c = inv.cluster
    config: dict[str, Any] = {"Network": str(c.network)}
    default_len = flannel_defaults(c.network)[0]
    if c.subnet_len != default_len:
        config["SubnetLen"] = c.subnet_len
    _, default_min, default_max = flannel_defaults(c.network, c.subnet_len)
    if c.subnet_min != default_min:
        config["SubnetMin"] = str(c.subnet_min)
    if c.subnet_max != default_max:
        config["SubnetMax"] = str(c.subnet_max)
    backend: dict[str, Any] = {"Type": c.backend}
    for key, value in c.backend_options:
        spec = BACKEND_OPTIONS[c.backend][key]
        if value != spec.default:
            backend[spec.json_key] = value
    config["Backend"] = backend
    return config


def network_config_json(inv: Inventory) -> str:
    """The exact value written to etcd, compact like the seed's `{"Network":"172.21.0.0/16"}`."""
    return json.dumps(network_config(inv), separators=(",", ":"))
