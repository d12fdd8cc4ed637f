"""`overlayctl certs rotate`: new member and client certificates from the same CA, pushed by
init's phases: etcd members restart one at a time (quorum kept), agents one host at a time (the
data plane stays up).

`certs rotate --new-ca` replaces the CA itself, in three rounds (overlayctl.pki.ROUNDS), each an
init rollout through the same phases and so with the same rolling restarts: 1 every host trusts
the old and the new CA, 2 every leaf is signed by the new CA, 3 hosts trust the new CA alone. A
round begins only once the one before it reached every host, so no etcd member or agent ever
meets a certificate it does not trust. The state folder records the round reached; a stopped
run is finished by the next (a round it had begun restarts etcd and the agents everywhere again,
as some may still run with what they read before).

`certs revoke HOST` deletes HOST's etcd user (its certificate and password stop working at once:
etcd authenticates both as that user) and its identity in the state folder, and records it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from overlayctl import paths as hp
from overlayctl.actions.init import init_phases, run_init
from overlayctl.errors import BadInput, OverlayctlError
from overlayctl.etcd.auth import EtcdAuth
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Inventory
from overlayctl.phases.base import HostPhase, Phase, Rollout, RolloutOptions, RolloutReport
from overlayctl.phases.connect import Connect
from overlayctl.phases.engine import run_phases, timed
from overlayctl.phases.facts import Gather
from overlayctl.phases.pki import RestartReaders
from overlayctl.pki import ROUNDS, Identities, Pki, Replacement, fingerprint
from overlayctl.remote.session import Session
from overlayctl.text import plural


def rotate(
    session: Session, options: RolloutOptions, report: RolloutReport | None = None
) -> RolloutReport:
    return run_init(session, dataclasses.replace(options, renew_certificates=True), report)


@dataclass
class CaReport(RolloutReport):
    """A CA replacement's report: the init report summed over its rounds, and the rounds run."""

    old_ca: str | None = None  # fingerprints
    new_ca: str | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)  # {round, name, changes, seconds}
    finished: bool = False

    def ca_doc(self) -> dict[str, Any]:
        return {"old": self.old_ca, "new": self.new_ca, "rounds": self.rounds,
                "finished": self.finished}  # fmt: skip


def replace_ca(session: Session, options: RolloutOptions, report: CaReport) -> CaReport:
    """Every round still to do, each on every host; then the old CA leaves the state folder.

    Stops (OverlayctlError) at a round that did not reach every host: the record stays at that
    round, and the next run resumes it."""
    require_tls(session.inv)
    with timed(report):
        Connect().run(Rollout(session, options))
        if session.failures:
            raise OverlayctlError(
                "the CA replacement needs every host and "
                f"{plural(len(session.failures), 'host')} could not be reached; nothing changed"
            )
        at = _pki(session).replacement
        resumed = at is not None and not at.done  # begun by a run that stopped
        for number in rounds_left(at):
            if number > 1:  # round 1 is recorded as it begins (the facts phase makes the CA)
                _pki(session).record(Replacement(number, done=False))
            _round(session, options, report, number, resumed=resumed)
            resumed = False
            _pki(session).record(Replacement(number, done=True))
        if report.old_ca is None:
            report.old_ca, report.new_ca = _fingerprints(session)
        pki = _pki(session)
        pki.finish_replacement()
        report.finished = True
        report.new_ca = fingerprint(pki.ca_cert())
        session.reporter.host("cluster", "ca", f"replaced: every host trusts sha256 "
                              f"{report.new_ca} alone; the old CA is gone")  # fmt: skip
    return report


def require_tls(inv: Inventory) -> None:
    """A cluster without TLS has no CA: refused before any connection or log (exit 2)."""
    if not inv.cluster.tls:
        raise BadInput("cluster.tls is false: the cluster has no CA to replace")


def rounds_left(at: Replacement | None) -> list[int]:
    """Pure: the rounds a run does, from the record AT (None: no replacement under way yet)."""
    return list(range(1 if at is None else at.next_round, 4))


def _round(
    session: Session, options: RolloutOptions, report: CaReport, number: int, *, resumed: bool
) -> None:
    """Round NUMBER on every host, through init's phases (facts, files, rolling restarts)."""
    again = " (resumed: etcd and the agents restart everywhere again)" if resumed else ""
    session.reporter.host("cluster", "ca", f"round {number} of 3: {ROUNDS[number]}{again}")
    this = RolloutReport()
    began = time.monotonic()
    try:
        run_phases(
            Rollout(session, dataclasses.replace(options, new_ca=True), this),
            _round_phases(options, resumed),
        )
    finally:
        _add(report, this, number, time.monotonic() - began)
        if report.old_ca is None:  # known once round 1's facts made or found the new CA
            report.old_ca, report.new_ca = _fingerprints(session)
    if session.failures:
        raise OverlayctlError(
            f"round {number} of the CA replacement ({ROUNDS[number]}) did not reach every host; "
            f"the state folder stays at round {number}: re-run `overlayctl certs rotate --new-ca` "
            "once they are back"
        )


def _round_phases(options: RolloutOptions, resumed: bool) -> list[Phase | HostPhase]:
    """init's phases without connecting again; RESUMED: etcd and the agents restart everywhere."""
    phases = [p for p in init_phases(options) if not isinstance(p, Connect)]
    if resumed:
        after = next(i for i, p in enumerate(phases) if isinstance(p, Gather)) + 1
        phases.insert(after, RestartReaders())
    return phases


def _add(report: CaReport, this: RolloutReport, number: int, seconds: float) -> None:
    """THIS round's changes into REPORT, and its line in the rounds."""
    for name, count in this.changes.items():
        report.changes[name] = report.changes.get(name, 0) + count
    report.plans |= this.plans
    report.network_config = this.network_config or report.network_config
    report.rounds.append({"round": number, "name": ROUNDS[number],
                          "changes": this.total_changes, "seconds": round(seconds, 2)})  # fmt: skip


def _pki(session: Session) -> Pki:
    """The state folder's PKI as it is now (each round reads and records it afresh)."""
    return Pki(state_dir(session.inv), session.inv.cluster.name)


def _fingerprints(session: Session) -> tuple[str | None, str | None]:
    """(old CA, new CA) of the replacement under way, None where there is none yet."""
    pki = _pki(session)
    known = {p.name: p for p in (pki.dir / "ca.crt", pki.dir / "ca-new.crt") if p.exists()}
    if "ca-new.crt" not in known:
        return None, None
    return fingerprint(known["ca.crt"].read_bytes()), fingerprint(known["ca-new.crt"].read_bytes())


@dataclass
class Revocation:
    """What `certs revoke HOST` did."""

    host: str
    user_deleted: bool | None = None  # None: not reached (no etcd member answered)
    files_removed: list[str] = field(default_factory=list)
    revoked_at: str = ""
    warnings: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_revoke(inv: Inventory, host: str) -> Identities:
    """Refused (BadInput) before any connection: no TLS, a reserved name, or a HOST this state
    folder never gave an identity and the inventory does not name."""
    require_tls(inv)
    if host in hp.RESERVED_HOST_NAMES:
        raise BadInput(f"certs revoke: {host!r} is etcd's own identity, not a host's")
    ids = Identities(state_dir(inv) / "pki")
    known = {h.name for h in inv.hosts} | set(ids.revoked())
    if host not in known and not (ids.dir / f"{host}.password").exists():
        raise BadInput(f"certs revoke: {host} is not in the inventory and has no identity in "
                       f"{ids.dir}")  # fmt: skip
    return ids


def revoke(session: Session, inv: Inventory, host: str, report: Revocation) -> Revocation:
    """HOST's etcd user deleted through a member of INV (SESSION's hosts: other than HOST where
    there is one), then its password and certificate gone from the state folder and the
    revocation recorded. The user goes first: a run stopped before it leaves HOST as it was, and
    a re-run finishes."""
    ids = check_revoke(inv, host)
    session.open()
    members = sorted(inv.etcd_members, key=lambda m: m.name == host)
    remote = next((session.remotes[m.name] for m in members if m.name in session.remotes), None)
    if remote is None:
        raise OverlayctlError("certs revoke: no etcd member could be reached; nothing changed")
    if any(m.name == host for m in inv.etcd_members):
        report.warnings.append(
            f"{host} is an etcd member: it keeps the cluster's data, its peer key and the admin "
            f"certificate; `overlayctl reset {host}` takes it out of the cluster"
        )
    report.user_deleted = EtcdAuth(remote, inv).delete_user(host)
    report.files_removed = ids.forget(host)
    ids.revoke(host)
    report.revoked_at = ids.revoked()[host]
    if host in {h.name for h in inv.hosts}:
        report.warnings.append(
            f"{host} is still in the inventory: the next `overlayctl init` gives it a new "
            "identity; take it out of the inventory (or `overlayctl reset` it) to keep it out"
        )
    return report
