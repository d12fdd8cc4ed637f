"""A CA replacement's pure parts (`certs rotate --new-ca`): what hosts trust in each round, which
leaves each round signs, the CA check while one is under way, and resuming from each recorded
round. The rollouts themselves are the e2e tier's (tests/e2e/test_maintenance.py)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from overlayctl import paths as hp
from overlayctl.actions import certs
from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.inventory import load_inventory
from overlayctl.inventory.model import Inventory
from overlayctl.phases.pki import ensure_pki
from overlayctl.pki import REPLACEMENT, Member, Pki, Replacement, fingerprint, foreign_cas
from overlayctl.pki import certs as pki_certs

MEMBERS = [Member("node1", "192.0.2.1"), Member("node2", "192.0.2.2")]
HOSTS = ["node1", "node2"]
LEAVES = [
    "node1-server", "node1-peer", "node2-server", "node2-peer", "node1-client", "node2-client",
    "admin",
]  # fmt: skip


def certs_in(pem: bytes) -> list[str]:
    """The fingerprints of the certificates in PEM, in order."""
    return [fingerprint(c.public_bytes(Encoding.PEM)) for c in x509.load_pem_x509_certificates(pem)]


def issuers(pki: Pki) -> dict[str, str]:
    """Leaf -> the fingerprint of the CA that signed it (old or new, as files in PKI.dir)."""
    cas = {p.name: x509.load_pem_x509_certificate(p.read_bytes())
           for p in (pki.dir / "ca.crt", pki.dir / "ca-new.crt") if p.exists()}  # fmt: skip
    found = {}
    for leaf in LEAVES:
        cert = x509.load_pem_x509_certificate(pki.pair(leaf).cert)
        for name, ca in cas.items():
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            found[leaf] = name
    return found


def at_round(tmp_path: Path, number: int, done: bool = False) -> tuple[Pki, bytes, bytes]:
    """A state folder whose replacement is at round NUMBER, its leaves made as that round's
    facts phase makes them; with the old and the new CA's certificates."""
    first = Pki(tmp_path, "demo")
    first.ensure(MEMBERS, HOSTS)
    old = first.ca_cert()
    first.begin_replacement()
    new = (first.dir / "ca-new.crt").read_bytes()
    for n in range(1, number + 1):
        pki = Pki(tmp_path, "demo")
        pki.record(Replacement(n, done=n < number or done))
        Pki(tmp_path, "demo").ensure(MEMBERS, HOSTS)
    return Pki(tmp_path, "demo"), old, new


def test_round_1_trusts_both_and_keeps_every_leaf_of_the_old_ca(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    old = pki.ca_cert()
    leaves = {leaf: pki.pair(leaf).cert for leaf in LEAVES}
    pki.begin_replacement()
    assert pki.replacement == Replacement(1, done=False)
    assert (
        pki.ensure(MEMBERS, HOSTS) == []
    )  # nothing re-signed: not every host trusts the new CA yet
    assert {leaf: pki.pair(leaf).cert for leaf in LEAVES} == leaves
    new = (pki.dir / "ca-new.crt").read_bytes()
    assert certs_in(pki.trusted()) == [fingerprint(old), fingerprint(new)]
    assert pki.host_files("node1", member=True)[hp.CA_CERT] == old + new
    assert pki.ca_cert() == old  # ca.crt stays the old CA until the end
    name = x509.load_pem_x509_certificate(new).subject.rfc4514_string()
    assert name.startswith("CN=overlayctl demo CA 2") and name != "CN=overlayctl demo CA"
    assert stat.S_IMODE((pki.dir / "ca-new.key").stat().st_mode) == 0o600
    assert json.loads((pki.dir / REPLACEMENT).read_text())["round"] == 1


def test_round_2_signs_every_leaf_with_the_new_ca_and_hosts_still_trust_both(
    tmp_path: Path,
) -> None:
    pki, old, new = at_round(tmp_path, 2)
    assert set(issuers(pki).values()) == {"ca-new.crt"} and len(issuers(pki)) == len(LEAVES)
    assert certs_in(pki.trusted()) == [fingerprint(old), fingerprint(new)]
    assert pki.ensure(MEMBERS, HOSTS) == []  # a resumed round 2 signs nothing again


def test_round_3_trusts_the_new_ca_alone_and_the_end_removes_the_old(tmp_path: Path) -> None:
    pki, old, new = at_round(tmp_path, 3, done=True)
    assert pki.trusted() == new
    assert set(issuers(pki).values()) == {"ca-new.crt"}
    key = (pki.dir / "ca-new.key").read_bytes()
    pki.finish_replacement()
    assert pki.ca_cert() == new and (pki.dir / "ca.key").read_bytes() == key
    assert not [p.name for p in pki.dir.glob("ca-new.*")] + [p.name for p in pki.dir.glob("*.tmp")]
    assert not (pki.dir / REPLACEMENT).exists()
    after = Pki(tmp_path, "demo")
    assert after.replacement is None and after.trusted() == new
    assert after.ensure(MEMBERS, HOSTS) == []  # the leaves are the new CA's: nothing to make
    assert foreign_cas(after.known_cas(), {"node1": old}) == {"node1": fingerprint(old)}


def test_an_end_stopped_between_its_two_renames_is_finished_by_the_next(tmp_path: Path) -> None:
    pki, _, new = at_round(tmp_path, 3, done=True)
    (pki.dir / "ca-new.key").replace(pki.dir / "ca.key")  # the key moved, the certificate not
    half = Pki(tmp_path, "demo")
    assert (
        half.trusted() == new and half.ensure(MEMBERS, HOSTS) == []
    )  # still signs with the new CA
    half.finish_replacement()
    assert Pki(tmp_path, "demo").ca_cert() == new


def test_the_ca_check_accepts_either_ca_and_the_bundle_while_a_replacement_is_under_way(
    tmp_path: Path,
) -> None:
    """init, plan and join check the hosts' CA before anything is made or pushed: mid-way, a
    host may hold the old CA, the new one or both (in either order), and that is this folder's."""
    inv = inventory(tmp_path)
    _, old, new = at_round(tmp_path / "overlayctl-state" / "demo", 2)
    other = Pki(tmp_path / "elsewhere", "demo")
    other.ensure(MEMBERS, HOSTS)
    lines: list[str] = []
    reporter = SimpleNamespace(say=lines.append)
    hosts = {"node1": old, "node2": old + new, "node3": new, "node4": new + old, "node5": None}
    ensure_pki(inv, reporter, hosts)  # type: ignore[arg-type]
    assert any("a CA replacement is under way, at round 2 of 3" in line for line in lines), lines
    with pytest.raises(Conflict, match=r"node1 \(sha256 .* \+ .*\); this state folder"):
        ensure_pki(inv, reporter, {"node1": old + other.ca_cert()})  # type: ignore[arg-type]
    both = f"{fingerprint(old)} + {fingerprint(new)}"
    assert foreign_cas([old], {"node1": old + new}) == {"node1": both}  # no replacement: refused


def inventory(tmp_path: Path) -> Inventory:
    """Two members; its state folder is tmp_path/overlayctl-state/demo (nothing connects)."""
    path = tmp_path / "cluster.yaml"
    path.write_text("cluster: {name: demo, network: 172.21.0.0/16}\nhosts: [{name: node1, "
                    "address: 192.0.2.1}, {name: node2, address: 192.0.2.2}]\n")  # fmt: skip
    return load_inventory(path)[0]


def test_the_refusal_names_the_folder_to_use_and_the_deliberate_replacement(
    tmp_path: Path,
) -> None:
    inv = inventory(tmp_path)
    theirs = Pki(tmp_path / "theirs", "demo")
    theirs.ensure(MEMBERS, HOSTS)
    reporter = SimpleNamespace(say=lambda _line: None)
    with pytest.raises(Conflict) as refused:
        ensure_pki(inv, reporter, {"node1": theirs.ca_cert()})  # type: ignore[arg-type]
    message = str(refused.value)
    assert "trust a CA this state folder did not make" in message
    assert f"node1 (sha256 {fingerprint(theirs.ca_cert())})" in message
    assert "has no CA yet" in message and str(tmp_path / "overlayctl-state" / "demo") in message
    assert "pki/ca.crt has the fingerprint above" in message
    assert "`overlayctl certs rotate --new-ca` from that folder" in message
    assert not (tmp_path / "overlayctl-state").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("record", "rounds", "resumed"),
    [
        (None, [1, 2, 3], False),
        (Replacement(1, False), [1, 2, 3], True),
        (Replacement(1, True), [2, 3], False),
        (Replacement(2, False), [2, 3], True),
        (Replacement(2, True), [3], False),
        (Replacement(3, False), [3], True),
        (Replacement(3, True), [], False),  # only the old CA's removal is left
    ],
)
def test_a_run_resumes_from_each_recorded_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Replacement | None,
    rounds: list[int], resumed: bool,
) -> None:  # fmt: skip
    """The rounds a run does from each record, which one restarts everything again, and the
    state folder it leaves: the new CA alone, signing every leaf."""
    inv = inventory(tmp_path)
    pki = Pki(tmp_path / "overlayctl-state" / "demo", "demo")
    pki.ensure(MEMBERS, HOSTS)
    old = pki.ca_cert()
    if record is not None:
        pki.begin_replacement()
        for n in range(1, record.round + 1):
            Pki(pki.dir.parent, "demo").record(Replacement(n, n < record.round or record.done))
            Pki(pki.dir.parent, "demo").ensure(MEMBERS, HOSTS)
    ran: list[tuple[int, bool]] = []
    session = fake_session(inv, monkeypatch, ran)
    report = certs.replace_ca(session, certs.RolloutOptions(), certs.CaReport())  # type: ignore[arg-type]
    assert ran == [(n, resumed and i == 0) for i, n in enumerate(rounds)]
    assert [r["round"] for r in report.rounds] == rounds and report.finished
    done = Pki(pki.dir.parent, "demo")
    assert done.replacement is None and done.ca_cert() != old
    assert done.trusted() == done.ca_cert() and report.new_ca == fingerprint(done.ca_cert())
    assert set(issuers(done).values()) == {"ca.crt"}
    assert not list(done.dir.glob("ca-new.*")) and not (done.dir / REPLACEMENT).exists()


def test_a_round_that_does_not_reach_every_host_stays_recorded_and_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = inventory(tmp_path)
    Pki(tmp_path / "overlayctl-state" / "demo", "demo").ensure(MEMBERS, HOSTS)
    ran: list[tuple[int, bool]] = []
    session = fake_session(inv, monkeypatch, ran, fail_in=2)
    with pytest.raises(OverlayctlError, match="stays at round 2: re-run `overlayctl certs rotate"):
        certs.replace_ca(session, certs.RolloutOptions(), certs.CaReport())  # type: ignore[arg-type]
    assert ran == [(1, False), (2, False)]
    assert Pki(tmp_path / "overlayctl-state" / "demo", "demo").replacement == Replacement(2, False)
    again: list[tuple[int, bool]] = []
    certs.replace_ca(fake_session(inv, monkeypatch, again), certs.RolloutOptions(),
                     certs.CaReport())  # type: ignore[arg-type]  # fmt: skip
    assert again == [(2, True), (3, False)]


def fake_session(inv: Inventory, monkeypatch: pytest.MonkeyPatch, ran: list, fail_in: int = 0):
    """A session whose rounds run only their facts phase's PKI step (ensure_pki, as Gather
    calls it), recording (round, resumed); FAIL_IN: that round loses a host."""
    lines: list[str] = []
    session = SimpleNamespace(inv=inv, failures=[],
                              reporter=SimpleNamespace(host=lambda *a: lines.append(" ".join(a)),
                                                       say=lines.append))  # fmt: skip

    def run_phases(rollout, phases) -> None:
        at = Pki(certs.state_dir(inv), "demo").replacement
        number = 1 if at is None else at.round
        ran.append((number, any(isinstance(p, certs.RestartReaders) for p in phases)))
        ensure_pki(inv, session.reporter, {}, new_ca=rollout.options.new_ca)  # type: ignore[arg-type]
        if number == fail_in:
            session.failures.append("node2 lost")

    monkeypatch.setattr(certs, "run_phases", run_phases)
    monkeypatch.setattr(certs.Connect, "run", lambda self, rollout: None)
    return session


def test_a_ca_near_its_end_is_kept_and_init_names_the_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new CA made by a plain init would be pushed everywhere at once, trusted by no running
    member: the CA stays, and the line says how to replace it."""
    inv = inventory(tmp_path)
    lines: list[str] = []
    reporter = SimpleNamespace(say=lines.append)
    pki = ensure_pki(inv, reporter, {})  # type: ignore[arg-type]
    assert pki is not None and pki.ca_ends_soon() is None and not any("ends" in x for x in lines)
    ca = pki.ca_cert()
    later = pki_certs.now() + dt.timedelta(days=pki_certs.CA_DAYS - 10)
    monkeypatch.setattr(pki_certs, "now", lambda: later)
    lines.clear()
    again = ensure_pki(inv, reporter, {"node1": ca})  # type: ignore[arg-type]
    assert again is not None and again.ca_cert() == ca
    assert not any("made ca" in x for x in lines), lines
    assert any("the CA ends on " in x and "certs rotate --new-ca" in x for x in lines), lines


def test_without_tls_there_is_no_ca_to_replace(tmp_path: Path) -> None:
    """Refused as bad input, one JSON document, before any connection or log is made."""
    from click.testing import CliRunner

    from overlayctl.cli import main

    inventory(tmp_path)
    path = tmp_path / "cluster.yaml"
    path.write_text(path.read_text().replace("network: 172.21.0.0/16", "network: 172.21.0.0/16, "
                                             "tls: false"))  # fmt: skip
    args = ["certs", "rotate", "--new-ca", "-i", str(path), "-o", "json"]
    result = CliRunner().invoke(main, args, prog_name="overlayctl")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and "no CA to replace" in doc["errors"][0]["message"]
    assert not (tmp_path / "overlayctl-state").exists()
