"""adopt's leases while flanneld and the agent share the cluster: the v3 leases ImportV2 wrote
(which subnet each host keeps, and the backend the agents run), and a host's v2 lease refreshed
to 24 h right before its flanneld stops, so that flanneld elsewhere keeps routing to it for the
rest of the roll (docs/design/adopt.md 3.3 step 2). Through etcdctl on a member, with the
inventory as etcd's clients see it during adoption (plain http, no identity).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from overlayctl.etcd.cluster import last_line
from overlayctl.etcd.v2_remote import read_v3
from overlayctl.inventory.endpoints import etcd_client_urls
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config_key
from overlayctl.remote.ssh import Remote

LEASE_TTL = 86400  # flanneld's subnetTTL: 24 h


@dataclass(frozen=True)
class Lease:
    key: str  # <prefix>/subnets/172.21.31.0-24 (the same path in v2 and v3)
    subnet: str  # 172.21.31.0/24


@dataclass(frozen=True)
class Imported:
    """The v3 key space after ImportV2: the network's backend and each PublicIP's lease."""

    backend: str = "vxlan"
    config: bool = False  # a network config exists in v3
    leases: dict[str, Lease] = field(default_factory=dict)  # PublicIP -> its lease


def parse_imported(kvs: list[tuple[str, str, int]], inv: Inventory) -> Imported:
    """Pure: `get --prefix <prefix>/` (etcdctl.parse_kvs) -> Imported. A config without Backend
    means vxlan to our agents; two leases of one PublicIP keep the first (ReadHandBuilt refuses
    that case before anything changes)."""
    prefix = inv.cluster.etcd_prefix.rstrip("/")
    backend, config, leases = "vxlan", False, {}
    for key, value, _lease in kvs:
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if key == network_config_key(inv):
            config = True
            backend = str((doc.get("Backend") or {}).get("Type") or "vxlan")
        elif key.startswith(f"{prefix}/subnets/") and doc.get("PublicIP"):
            name = key.rsplit("/", 1)[1]
            try:
                subnet = str(ipaddress.IPv4Network(name.replace("-", "/")))
            except ValueError:
                continue
            leases.setdefault(str(doc["PublicIP"]), Lease(key, subnet))
    return Imported(backend, config, leases)


def read_imported(remote: Remote, inv: Inventory) -> Imported:
    """The v3 config and leases, through REMOTE (an etcd member)."""
    return parse_imported(read_v3(remote, inv), inv)


def v2_argv(inv: Inventory, *args: str) -> list[str]:
    """etcdctl speaking the v2 API (flanneld 0.7's) to INV's client URLs."""
    return ["env", "ETCDCTL_API=2", "etcdctl",
            "--endpoints=" + ",".join(etcd_client_urls(inv)), *args]  # fmt: skip


def refresh_v2_lease(remote: Remote, inv: Inventory, key: str) -> str:
    """KEY's v2 lease back to 24 h, only if its value is unchanged (`--swap-with-value`: a
    flanneld renewing it meanwhile wins). Returns what happened, for the progress line; never
    raises (the refresh is insurance: the lease usually has hours left)."""
    got = remote.run(v2_argv(inv, "-o", "json", "get", key), check=False, timeout=30)
    if got.code != 0:
        return f"no v2 lease {key} to refresh ({last_line(got.stderr)})"
    try:
        doc = json.loads(got.stdout)
        value = str((doc.get("node") or doc)["value"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"v2 lease {key} not refreshed: unreadable answer"
    argv = v2_argv(inv, "set", "--ttl", str(LEASE_TTL), "--swap-with-value", value, key, value)
    done = remote.run(argv, check=False, timeout=30)
    if done.code != 0:
        return f"v2 lease {key} not refreshed ({last_line(done.stderr)})"
    return f"v2 lease {key} refreshed to 24 h"
