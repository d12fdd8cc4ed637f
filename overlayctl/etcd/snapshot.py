"""`overlayctl etcd snapshot save|restore`: back up the cluster's etcd, and rebuild it from one.

save: `etcdctl snapshot save` on the first healthy member, copied to the workstation (0600).
restore: the file goes to every member; each stops etcd, restores its own data dir from it
(`etcdctl snapshot restore` with its name and peer URL, the whole inventory as the initial
cluster), then all start together and must be healthy. Agents keep the data plane up meanwhile
and find their leases again (or re-acquire the same subnets).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from overlayctl import apply
from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd import etcdctl
from overlayctl.inventory.endpoints import etcd_scheme
from overlayctl.inventory.model import Host
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote

RESTORE = HostScript("snapshot-restore.sh")


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
    health = etcd_cluster.health(_members(session)[0][1], inv)
    member, remote = next(((m, r) for m, r in _members(session) if health[m.name].healthy),
                          (None, None))  # fmt: skip
    if member is None or remote is None:
        raise OverlayctlError("no healthy etcd member to take a snapshot from")
    folder = f"/tmp/overlayctl-snapshot-{secrets.token_hex(8)}"  # noqa: S108 - made 0700, new
    remote.run(["install", "-d", "-m", "700", "-o", session.inv.ssh.user, folder])
    own = f"{etcd_scheme(inv)}://{member.address}:{hp.ETCD_CLIENT_PORT}"
    try:
        remote.run([*etcdctl.base_argv(inv, [own]), "snapshot", "save", f"{folder}/etcd.db"],
                   timeout=600, waiting_for="etcd's snapshot")  # fmt: skip
        remote.run(["chown", session.inv.ssh.user, f"{folder}/etcd.db"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        # Made 0600 before a byte arrives: the download writes into it (it was briefly 0644).
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        remote.download(f"{folder}/etcd.db", tmp)
        os.chmod(tmp, 0o600)
        tmp.replace(out)
    finally:
        remote.run(["rm", "-rf", folder], check=False)
    session.reporter.say(f"{member.name:<12} snapshot  saved {out} ({out.stat().st_size} bytes)")
    return out.stat().st_size


def restore(session: Session, snapshot: Path, timeout: float) -> None:
    """Rebuild every member's data from SNAPSHOT and start the cluster again."""
    session.open()
    inv = session.inv
    members = _members(session)
    missing = [m.name for m in inv.etcd_members if m.name not in session.remotes]
    if missing:
        raise OverlayctlError(f"restore needs every etcd member; not reachable: {missing}")
    scheme = etcd_scheme(inv)
    initial = ",".join(f"{m.name}={scheme}://{m.address}:{hp.ETCD_PEER_PORT}"
                       for m in inv.etcd_members)  # fmt: skip

    def rebuild(host: Host, remote: Remote) -> None:
        folder = f"/tmp/overlayctl-snapshot-{secrets.token_hex(8)}"  # noqa: S108 - 0700, new
        remote.upload([snapshot], folder)
        try:
            remote.run(["systemctl", "stop", "etcd"], timeout=120, waiting_for="etcd to stop")
            remote.script(
                RESTORE, f"{folder}/{snapshot.name}", hp.etcd_data_dir(host.name),
                f"--name={host.name}", f"--initial-cluster={initial}",
                f"--initial-cluster-token={inv.cluster.name}",
                f"--initial-advertise-peer-urls={scheme}://{host.address}:{hp.ETCD_PEER_PORT}",
                timeout=600, waiting_for="the snapshot's restore",
            )  # fmt: skip
        finally:
            remote.run(["rm", "-rf", folder], check=False)

    hosts = [m for m, _ in members]
    result = session.each("restore", rebuild, hosts)
    if not result.ok:
        raise OverlayctlError("restore failed on " + ", ".join(result.failed))
    session.each("restore", lambda h, r: apply.restart_unit(r, "etcd", wait=False), hosts)
    took = etcd_cluster.wait_healthy(members[0][1], inv, timeout)
    session.reporter.say(f"{'cluster':<12} restore   {len(hosts)} members healthy ({took:.1f} s)")
