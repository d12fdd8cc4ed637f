"""pki: the cluster's certificates. Made (or renewed, for `certs rotate`) here, in the state
folder beside the inventory, then pushed to /etc/overlayctl/pki/ on the hosts (keys 0600;
server and peer keys owned by etcd). The units that read them restart in their own phases.

Before anything is made or pushed, the CA the hosts already trust must be this state folder's:
a second state folder (another copy of the inventory, `init` inside `lab shell`) would make a
new CA and push it, and etcd would restart with certificates no peer trusts. While a CA
replacement is under way (`certs rotate --new-ca`), either CA, or both together, is this folder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import Conflict
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Inventory
from overlayctl.phases.agent import Agent
from overlayctl.phases.base import HostPhase, OnHost, Rollout
from overlayctl.phases.etcd import Etcd
from overlayctl.pki import ROUNDS, Member, Pki, fingerprint, foreign_cas
from overlayctl.plan.changes import Action
from overlayctl.remote.session import Reporter

NO_TLS = (
    "cluster.tls is false: etcd runs without authentication, so every host may write the whole "
    "network config; per-host identities and least privilege need cluster.tls: true"
)


class PushPki(HostPhase):
    """Every host's certificates and etcd password; the admin's only on etcd members (removed
    from any other host that holds it, e.g. a former member)."""

    name: ClassVar[str] = "pki"

    def owns(self, path: str) -> bool:
        return path.startswith(hp.PKI_DIR + "/")

    def finish(self, on: OnHost) -> int:
        if on.target.host.is_etcd or not on.inv.cluster.tls:
            return 0
        script = 'for f in "$@"; do [ -e "$f" ] && rm -f "$f" && echo "$f"; done; true'
        out = on.remote.run(["sh", "-c", script, "sh", *hp.ADMIN_FILES])
        return len(out.stdout.split())


def ensure_pki(
    inv: Inventory,
    reporter: Reporter,
    on_hosts: dict[str, bytes | None],
    *,
    renew_leaves: bool = False,
    new_ca: bool = False,
    write: bool = True,
) -> Pki | None:
    """The cluster's PKI, made or renewed where needed, after checking ON_HOSTS (each host's CA
    file, None where it has none). NEW_CA (`certs rotate --new-ca`): a CA replacement begins,
    unless one is under way. WRITE False (`plan`): in memory only, reported as what would be
    made. Refused (Conflict) before anything is made when a host trusts another CA."""
    if not inv.cluster.tls:
        reporter.say(f"{'local':<12} {'pki':<9} {NO_TLS}")
        return None
    pki = Pki(state_dir(inv), inv.cluster.name, write=write)
    _same_ca_everywhere(on_hosts, pki, inv.cluster.name)
    if new_ca and write:
        pki.begin_replacement()
    _readmit(pki, inv, reporter)
    ending = pki.leaves_ending() if pki.dir.exists() else {}
    for name, ends in sorted(ending.items()):
        reporter.say(f"{'local':<12} {'pki':<9} {name} ends on {ends:%Y-%m-%d}, within 30 days: "
                     f"{'renewed now' if write else 'init renews it'}")  # fmt: skip
    members = [Member(h.name, str(h.address)) for h in inv.etcd_members]
    made = pki.ensure(members, [h.name for h in inv.hosts], renew_leaves=renew_leaves)
    if made:
        verb = "made" if write else "would make"
        reporter.say(f"{'local':<12} {'pki':<9} {verb} {', '.join(made)} in {pki.dir}")
    ends = pki.ca_ends_soon() if pki.replacement is None else None
    if ends is not None:
        reporter.say(f"{'local':<12} {'pki':<9} the CA ends on {ends:%Y-%m-%d}: replace it with "
                     "`overlayctl certs rotate --new-ca`")  # fmt: skip
    if pki.replacement is not None and not new_ca:
        at = pki.replacement
        reporter.say(
            f"{'local':<12} {'pki':<9} a CA replacement is under way, at round {at.round} of 3 "
            f"({ROUNDS[at.round]}{'' if at.done else ', not on every host yet'}): "
            "`overlayctl certs rotate --new-ca` finishes it"
        )
    return pki


def _readmit(pki: Pki, inv: Inventory, reporter: Reporter) -> None:
    """A revoked host still in the inventory gets a new identity from this run, said aloud."""
    for host, when in sorted(pki.ids.revoked().items()):
        if host not in {h.name for h in inv.hosts}:
            continue
        reporter.say(f"{'local':<12} {'pki':<9} {host} was revoked on {when} and is still in the "
                     "inventory: it gets a new certificate, password and etcd user (take it out "
                     "of the inventory, or `overlayctl reset` it, to keep it out)")  # fmt: skip
        pki.ids.readmit(host)


def _same_ca_everywhere(on_hosts: dict[str, bytes | None], pki: Pki, cluster: str) -> None:
    """Refused, naming the way forward, when a host trusts a CA this state folder did not make."""
    known = pki.known_cas()
    foreign = foreign_cas(known, on_hosts)
    if not foreign:
        return
    hosts = ", ".join(f"{host} (sha256 {fp})" for host, fp in sorted(foreign.items()))
    local_ca = pki.dir / "ca.crt"
    if known:
        ours = f"holds another CA ({local_ca}: sha256 {' and '.join(map(fingerprint, known))})"
    else:
        ours = f"has no CA yet (no {local_ca})"
    raise Conflict(
        f"the hosts trust a CA this state folder did not make: {hosts}; this state folder "
        f"({pki.dir.parent}) {ours}. Run overlayctl from the state folder that set the cluster "
        f"up, the one whose pki/ca.crt has the fingerprint above (overlayctl-state/{cluster} "
        f"beside the inventory of the first `init`, or $OVERLAYCTL_STATE_DIR/{cluster}); to "
        "replace the cluster's CA on purpose, run `overlayctl certs rotate --new-ca` from that "
        "folder (member by member, quorum kept; docs/runbooks/rotate-certificates.md)"
    )


@dataclass
class RestartReaders:
    """A resumed round of a CA replacement: etcd and the agent restart wherever they run, their
    files changed or not. The stopped run may have pushed a host's certificates and ended before
    restarting what reads them (etcd and the agent read the CA only when they start), and the
    next round is safe only once every running etcd and agent has read this round's."""

    title: str = "pki"

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        for target in rollout.live():
            for phase in (Etcd(), Agent()):
                unit = phase.restart.unit
                state = target.facts.units.get(unit)
                if not phase.runs_on(target.host) or state is None or state.active != "active":
                    continue
                if not target.plan.wants(unit, "start", "restart"):
                    target.plan.actions.append(Action(phase.name, "restart", unit))
