"""`overlayctl status` (etcd half): members, leader, health, DB size and the network config."""

from __future__ import annotations

from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd.cluster import ClusterStatus
from overlayctl.host_status import HostStatus, host_status
from overlayctl.inventory.model import Inventory
from overlayctl.remote.session import Session


def cluster_status(session: Session) -> tuple[ClusterStatus, list[HostStatus]]:
    """etcd through the first member that answers over SSH, then every node host's own state."""
    inv = session.inv
    session.open()
    cluster = ClusterStatus(unreachable=[m.name for m in inv.etcd_members])
    for member in inv.etcd_members:
        remote = session.remotes.get(member.name)
        if remote is not None:
            cluster = etcd_cluster.status(remote, inv)
            break
    nodes = [h for h in inv.hosts if h.is_node]
    backend, network = _data_plane(cluster.network_config, inv)
    result = session.each(
        "status",
        lambda h, r: host_status(r, h, cluster.leases, backend, network, known=not cluster.errors),
        nodes,
    )
    hosts = [result.succeeded.get(h.name) or HostStatus(h.name, error=_why(session, h.name))
             for h in nodes]  # fmt: skip
    return cluster, hosts


def _why(session: Session, name: str) -> str:
    return next((f.error for f in session.failures if f.host == name), "not reachable")


def _data_plane(config: object, inv: Inventory) -> tuple[str, str]:
    """The backend and Network the agents run on: etcd's config, else the inventory's. The routes
    status expects on each host follow from them."""
    config = config if isinstance(config, dict) else {}
    backend = config.get("Backend")
    kind = backend.get("Type") if isinstance(backend, dict) else None
    network = config.get("Network")
    return (
        kind if isinstance(kind, str) else inv.cluster.backend,
        network if isinstance(network, str) else str(inv.cluster.network),
    )
