"""`overlayctl etcd snapshot save|restore`: back up the cluster's etcd, and rebuild it from one.

save: a snapshot on the first healthy member, copied to the workstation (0600). restore: every
member's data rebuilt from the file, then all start together (a new cluster reaches quorum only
so) and must be healthy. Agents keep the data plane up meanwhile and find their leases again (or
re-acquire the same subnets).
"""

from __future__ import annotations

from pathlib import Path

from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster, snapshot
from overlayctl.inventory.model import Host
from overlayctl.phases.etcd import restart_etcd
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote


def _members(session: Session) -> list[tuple[Host, Remote]]:
    found = [(m, session.remotes[m.name]) for m in session.inv.etcd_members
             if m.name in session.remotes]  # fmt: skip
    if not found:
        raise OverlayctlError("no etcd member is reachable over SSH")
    return found


def save(session: Session, out: Path) -> int:
    """Write a snapshot of the cluster to OUT (0600); returns its size in bytes."""
    session.open()
    inv = session.inv
    health = cluster.health(_members(session)[0][1], inv)
    member, remote = next(((m, r) for m, r in _members(session) if health[m.name].healthy),
                          (None, None))  # fmt: skip
    if member is None or remote is None:
        raise OverlayctlError("no healthy etcd member to take a snapshot from")
    size = snapshot.save(remote, inv, member, out)
    session.reporter.say(f"{member.name:<12} snapshot  saved {out} ({size} bytes)")
    return size


def restore(session: Session, file: Path, timeout: float) -> None:
    """Rebuild every member's data from FILE and start the cluster again."""
    session.open()
    inv = session.inv
    members = _members(session)
    missing = [m.name for m in inv.etcd_members if m.name not in session.remotes]
    if missing:
        raise OverlayctlError(f"restore needs every etcd member; not reachable: {missing}")
    hosts = [m for m, _ in members]
    result = session.each("restore", lambda h, r: snapshot.restore(r, inv, h, file), hosts)
    if not result.ok:
        raise OverlayctlError("restore failed on " + ", ".join(result.failed))
    session.each("restore", lambda _h, r: restart_etcd(r, wait=False), hosts)
    took = cluster.wait_healthy(members[0][1], inv, timeout)
    session.reporter.say(f"{'cluster':<12} restore   {len(hosts)} members healthy ({took:.1f} s)")
