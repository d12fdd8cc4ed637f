"""`overlayctl status` (etcd half): members, leader, health, DB size and the network config."""

from __future__ import annotations

from overlayctl import etcd_cluster
from overlayctl.etcd_cluster import ClusterStatus
from overlayctl.host_status import HostStatus, host_status
from overlayctl.session import Session


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
    result = session.each("status", lambda h, r: host_status(r, h, cluster.leases), nodes)
    hosts = [result.succeeded.get(h.name) or HostStatus(h.name, error=_why(session, h.name))
             for h in nodes]  # fmt: skip
    return cluster, hosts


def _why(session: Session, name: str) -> str:
    return next((f.error for f in session.failures if f.host == name), "not reachable")
