"""pki: the cluster's certificates. Made (or renewed, for `certs rotate`) here, in the state
folder beside the inventory, then pushed to /etc/overlayctl/pki/ on the hosts (keys 0600;
server and peer keys owned by etcd). The units that read them restart in their own phases.

Before anything is made or pushed, the CA the hosts already trust must be this state folder's:
a second state folder (another copy of the inventory, `init` inside `lab shell`) would make a
new CA and push it, and etcd would restart with certificates no peer trusts.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import Conflict
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Inventory
from overlayctl.phases.base import HostPhase
from overlayctl.pki import Member, Pki, foreign_cas
from overlayctl.remote.session import Reporter


class PushPki(HostPhase):
    name: ClassVar[str] = "pki"

    def owns(self, path: str) -> bool:
        return path.startswith(hp.PKI_DIR + "/")


def ensure_pki(
    inv: Inventory,
    reporter: Reporter,
    on_hosts: dict[str, bytes | None],
    *,
    renew_leaves: bool = False,
    write: bool = True,
) -> Pki | None:
    """The cluster's PKI, made or renewed where needed, after checking ON_HOSTS (each host's CA
    certificate, None where it has none). WRITE False (`plan`): in memory only, reported as what
    would be made. Refused (Conflict) before anything is made when a host trusts another CA."""
    if not inv.cluster.tls:
        return None
    _same_ca_everywhere(on_hosts, state_dir(inv) / "pki" / "ca.crt")
    pki = Pki(state_dir(inv), inv.cluster.name, write=write)
    members = [Member(h.name, str(h.address)) for h in inv.etcd_members]
    made = pki.ensure(members, renew_leaves=renew_leaves)
    if made:
        verb = "made" if write else "would make"
        reporter.say(f"{'local':<12} {'pki':<9} {verb} {', '.join(made)} in {pki.dir}")
    return pki


def _same_ca_everywhere(on_hosts: dict[str, bytes | None], local_ca: Path) -> None:
    local = local_ca.read_bytes() if local_ca.exists() else None
    foreign = foreign_cas(local, on_hosts)
    if not foreign:
        return
    hosts = ", ".join(f"{host} (sha256 {fp})" for host, fp in sorted(foreign.items()))
    ours = f"holds another CA ({local_ca})" if local else f"has no CA yet (no {local_ca})"
    raise Conflict(
        f"the hosts trust a CA this state folder did not make: {hosts}; this state folder {ours}. "
        "Run from the state folder that set the cluster up (beside its inventory, or "
        "$OVERLAYCTL_STATE_DIR); overlayctl does not replace a running cluster's CA (reset the "
        "cluster first to start over)"
    )
