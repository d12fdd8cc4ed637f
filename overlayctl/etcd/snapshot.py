"""One member's side of etcd's snapshots: take one there and copy it here (0600), or rebuild
the member's data dir from one (`etcdctl snapshot restore` with its own name and peer URL, the
whole inventory as the initial cluster). actions/snapshot.py picks the members.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from overlayctl import paths as hp
from overlayctl.etcd import etcdctl
from overlayctl.inventory.endpoints import client_url, initial_cluster, peer_url
from overlayctl.inventory.model import Host, Inventory
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

RESTORE = HostScript("snapshot-restore.sh")


def _folder() -> str:
    return f"/tmp/overlayctl-snapshot-{secrets.token_hex(8)}"  # noqa: S108 - made 0700, new


def save(remote: Remote, inv: Inventory, member: Host, out: Path) -> int:
    """A snapshot of MEMBER's data, written to OUT here (0600); its size in bytes."""
    folder = _folder()
    remote.run(["install", "-d", "-m", "700", "-o", inv.ssh.user, folder])
    try:
        remote.run([*etcdctl.base_argv(inv, [client_url(inv, member)]), "snapshot", "save",
                    f"{folder}/etcd.db"], timeout=600, waiting_for="etcd's snapshot")  # fmt: skip
        remote.run(["chown", inv.ssh.user, f"{folder}/etcd.db"])
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
    return out.stat().st_size


def restore(remote: Remote, inv: Inventory, member: Host, snapshot: Path) -> None:
    """MEMBER's etcd stopped and its data dir rebuilt from SNAPSHOT (started by the caller, with
    every other member)."""
    folder = _folder()
    remote.upload([snapshot], folder)
    try:
        remote.run(["systemctl", "stop", "etcd"], timeout=120, waiting_for="etcd to stop")
        remote.script(
            RESTORE, f"{folder}/{snapshot.name}", hp.etcd_data_dir(member.name),
            f"--name={member.name}", f"--initial-cluster={initial_cluster(inv, inv.etcd_members)}",
            f"--initial-cluster-token={inv.cluster.name}",
            f"--initial-advertise-peer-urls={peer_url(inv, member)}",
            timeout=600, waiting_for="the snapshot's restore",
        )  # fmt: skip
    finally:
        remote.run(["rm", "-rf", folder], check=False)
