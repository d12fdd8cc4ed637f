"""`overlayctl status` (etcd half): members, leader, health, DB size and the network config."""

from __future__ import annotations

from overlayctl import etcd_cluster
from overlayctl.etcd_cluster import ClusterStatus
from overlayctl.session import Session


def cluster_status(session: Session) -> ClusterStatus:
    """Ask the first etcd member that answers over SSH; with none, every member is unreachable."""
    inv = session.inv
    session.open()
    for member in inv.etcd_members:
        remote = session.remotes.get(member.name)
        if remote is not None:
            return etcd_cluster.status(remote, inv)
    return ClusterStatus(unreachable=[m.name for m in inv.etcd_members])
