"""etcd's membership: which members a cluster has, adding one to a running cluster and removing
one, always through a member that stays.
"""

from __future__ import annotations

import dataclasses
import time

from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.inventory.endpoints import etcd_client_urls, peer_url
from overlayctl.inventory.model import Host, Inventory
from overlayctl.remote.ssh import Remote


def with_members(inv: Inventory, members: list[Host] | tuple[Host, ...]) -> Inventory:
    """INV as a cluster of only MEMBERS sees it: other hosts keep their roles but not etcd."""
    names = {m.name for m in members}
    return dataclasses.replace(
        inv, hosts=tuple(h for h in inv.hosts if not h.is_etcd or h.name in names)
    )


def require(remote: Remote, inv: Inventory, members: list[Host]) -> None:
    """MEMBERS, to be (re)started in a running cluster, must already belong to it: new ones need
    `join` (started alone, they would make a cluster of their own)."""
    listed = remote.run(etcdctl.member_list(inv), check=False)
    names = {m.name for m in etcdctl.parse_members(listed.stdout)} if listed.code == 0 else set()
    for member in members:
        if names and member.name not in names:
            raise OverlayctlError(
                f"{member.name} is not a member of the running etcd cluster; add it with "
                f"`overlayctl join {member.name}`"
            )


def add(remote: Remote, live: Inventory, member: Host) -> str:
    """`member add` MEMBER to LIVE's cluster (through REMOTE, one of its members); its id.

    Retried while etcd calls the cluster unhealthy: etcd refuses reconfiguration until every
    member has been connected for a few seconds (its strict reconfig check), which is the case
    right after the cluster was started.
    """
    argv = etcdctl.member_add(live, member.name, peer_url(live, member), etcd_client_urls(live))
    deadline = time.monotonic() + 30
    with remote.waiting(f"etcd to accept {member.name} as a member", phase="etcd"):
        while True:
            result = remote.run(argv, check=False)
            if result.code == 0:
                return etcdctl.parse_member_add(result.stdout)
            if "unhealthy cluster" not in result.stderr or time.monotonic() > deadline:
                last = (result.stderr.strip().splitlines() or ["?"])[-1]
                raise OverlayctlError(f"join: etcd refused to add {member.name}: {last}")
            time.sleep(1)


def remove_id(remote: Remote, live: Inventory, member_id: str) -> None:
    """Remove the member MEMBER_ID, talking only to LIVE's members (best effort: it undoes an
    `add` whose member never became healthy)."""
    remote.run(etcdctl.member_remove(live, member_id, etcd_client_urls(live)), check=False)


def remove(remote: Remote, inv: Inventory, staying: Inventory, host: Host) -> None:
    """Remove HOST's member, if the cluster lists it, through the members that stay (a removed
    member may still answer for a moment)."""
    listed = etcdctl.parse_members(remote.run(etcdctl.member_list(inv)).stdout)
    member = next((m for m in listed if m.name == host.name), None)
    if member is not None:
        remote.run(etcdctl.member_remove(staying, member.id, etcd_client_urls(staying)))
