"""Where etcd listens, as the inventory says: the URLs the agent, etcdctl and the members dial.

Here, not beside the templates, so that building an etcdctl command needs no Jinja2.
"""

from __future__ import annotations

from collections.abc import Iterable

from overlayctl import paths as hp
from overlayctl.inventory.model import Host, Inventory


def etcd_scheme(inv: Inventory) -> str:
    return "https" if inv.cluster.tls else "http"


def etcd_client_urls(inv: Inventory) -> list[str]:
    """Every etcd member's client URL on the standard port: what the agent and tools dial."""
    return [client_url(inv, m) for m in inv.etcd_members]


def client_url(inv: Inventory, member: Host) -> str:
    """MEMBER's own client URL (standard port)."""
    return f"{etcd_scheme(inv)}://{member.address}:{hp.ETCD_CLIENT_PORT}"


def peer_url(inv: Inventory, member: Host) -> str:
    """MEMBER's peer URL: only its own address (the seed's node1 advertised node2's)."""
    return f"{etcd_scheme(inv)}://{member.address}:{hp.ETCD_PEER_PORT}"


def initial_cluster(inv: Inventory, members: Iterable[Host]) -> str:
    """ETCD_INITIAL_CLUSTER / --initial-cluster: `name=peer URL` of each of MEMBERS."""
    return ",".join(f"{m.name}={peer_url(inv, m)}" for m in members)
