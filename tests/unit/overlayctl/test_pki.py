"""The cluster PKI: made once, reused, renewed only for what changed; keys private; one
identity per host (CN = its name), the admin's (CN root) on members only, peers' CN fixed."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509

from overlayctl import paths as hostpaths
from overlayctl.pki import LEAF_DAYS, Member, Pki, certs

MEMBERS = [Member("node1", "192.168.255.154"), Member("node2", "192.168.255.155")]
HOSTS = ["node1", "node2", "node3"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_makes_everything_with_private_keys(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    made = pki.ensure(MEMBERS, HOSTS)
    assert made == [
        "ca", "node1-server", "node1-peer", "node2-server", "node2-peer", "node1-client",
        "node2-client", "node3-client", "admin", "node1.password", "node2.password",
        "node3.password", "root.password",
    ]  # fmt: skip
    assert _mode(pki.dir) == 0o700
    for key in [*pki.dir.glob("*.key"), *pki.dir.glob("*.password")]:
        assert _mode(key) == 0o600, key
    assert not list(pki.dir.glob("*.tmp"))


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    before = {p.name: p.read_bytes() for p in pki.dir.iterdir()}
    assert pki.ensure(MEMBERS, HOSTS) == []
    assert {p.name: p.read_bytes() for p in pki.dir.iterdir()} == before


def test_a_changed_address_renews_only_that_members_certs(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    moved = [MEMBERS[0], Member("node2", "192.168.255.200")]
    assert pki.ensure(moved, HOSTS) == ["node2-server", "node2-peer"]
    cert = x509.load_pem_x509_certificate(pki.pair("node2-server").cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.168.255.200" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_certificates_chain_to_the_ca_and_say_what_they_are_for(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    ca = x509.load_pem_x509_certificate(pki.ca_cert())
    client = x509.load_pem_x509_certificate(pki.pair("node3-client").cert)
    client.verify_directly_issued_by(ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in eku] == ["clientAuth"]
    server = x509.load_pem_x509_certificate(pki.pair("node1-server").cert)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"node1", "localhost"}


def test_host_files_give_members_server_peer_and_admin_keys_and_others_their_own_identity(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    member = pki.host_files("node1", member=True)
    plain = pki.host_files("node3", member=False)
    assert set(plain) == {hostpaths.CA_CERT, hostpaths.ETCD_CLIENT_CERT, hostpaths.ETCD_CLIENT_KEY,
                          hostpaths.ETCD_AGENT_PASSWORD}  # fmt: skip
    assert set(member) == {f.path for f in hostpaths.PKI_FILES}
    assert member[hostpaths.ETCD_SERVER_KEY].startswith(b"-----BEGIN PRIVATE KEY-----")
    # A host's certificate has no CN (etcd's gateway refuses one once auth is on): its UID.
    assert _subject(plain[hostpaths.ETCD_CLIENT_CERT]) == "UID=node3"
    assert _subject(member[hostpaths.ETCD_CLIENT_CERT]) == "UID=node1"
    assert _cn(member[hostpaths.ETCD_ADMIN_CERT]) == "root"
    assert _cn(member[hostpaths.ETCD_PEER_CERT]) == hostpaths.ETCD_PEER_CN
    assert _cn(member[hostpaths.ETCD_SERVER_CERT]) == "node1-server"
    password = plain[hostpaths.ETCD_AGENT_PASSWORD].decode().strip()
    assert len(password) >= 40 and password == pki.ids.password("node3")
    assert password != pki.ids.password("node1") != pki.ids.password("root")


def _cn(pem: bytes) -> str:
    return certs.common_name(x509.load_pem_x509_certificate(pem))


def _subject(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


def test_leaves_last_90_days_and_are_renewed_within_30(tmp_path: Path, monkeypatch) -> None:
    """Short-lived leaves, renewed by any init once they end within 30 days (the CA is not)."""
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    cert = x509.load_pem_x509_certificate(pki.pair("node3-client").cert)
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert LEAF_DAYS == 90 and days == 90
    assert pki.leaves_ending() == {}
    later = certs.now() + dt.timedelta(days=LEAF_DAYS - 29)
    monkeypatch.setattr(certs, "now", lambda: later)
    assert set(pki.leaves_ending()) == {"node1-server", "node1-peer", "node2-server",
                                        "node2-peer", "node1-client", "node2-client",
                                        "node3-client", "admin"}  # fmt: skip
    remade = pki.ensure(MEMBERS, HOSTS)
    assert "ca" not in remade and "node3-client" in remade and "node3.password" not in remade


def test_an_old_peer_certificate_is_made_again_for_its_cn(tmp_path: Path) -> None:
    """Peers made before the fixed peer CN (CN node1-peer) are replaced: etcd admits only
    ETCD_PEER_CN on its peer port. The old shared client certificate leaves the folder."""
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS, HOSTS)
    (pki.dir / "client.crt").write_bytes(b"old")
    (pki.dir / "client.key").write_bytes(b"old")
    ca = pki.ca_cert(), (pki.dir / "ca.key").read_bytes()
    old = Pki(tmp_path / "other", "demo")
    old.dir.mkdir(parents=True)
    (old.dir / "ca.crt").write_bytes(ca[0])
    (old.dir / "ca.key").write_bytes(ca[1])
    leaf = certs.Leaf(
        "node1-peer", certs.member_sans(MEMBERS[0]), certs.EKU_BOTH, certs.named("node1-peer")
    )
    old._ensure_leaf(old._ensure_ca([]), leaf, [])
    for ext in ("crt", "key"):
        (pki.dir / f"node1-peer.{ext}").write_bytes((old.dir / f"node1-peer.{ext}").read_bytes())
    assert pki.ensure(MEMBERS, HOSTS) == ["node1-peer"]
    assert _cn(pki.pair("node1-peer").cert) == hostpaths.ETCD_PEER_CN
    assert not (pki.dir / "client.crt").exists() and not (pki.dir / "client.key").exists()


def test_plan_makes_passwords_in_memory_only(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo", write=False)
    assert "node3.password" in pki.ensure(MEMBERS, HOSTS)
    assert pki.host_files("node3", member=False)[hostpaths.ETCD_AGENT_PASSWORD]
    assert not pki.dir.exists()


def test_foreign_cas_names_hosts_that_trust_another_ca(tmp_path) -> None:
    """A second state folder must not push a new CA over a running cluster's (issue #16)."""
    from overlayctl.pki import Member, Pki, fingerprint, foreign_cas

    ours, theirs = Pki(tmp_path / "a", "c"), Pki(tmp_path / "b", "c")
    for pki in (ours, theirs):
        pki.ensure([Member("node1", "192.0.2.1")], ["node1"])
    mine, other = ours.ca_cert(), theirs.ca_cert()
    assert foreign_cas([mine], {"node1": mine, "node2": None}) == {}
    assert foreign_cas([mine], {"node1": other}) == {"node1": fingerprint(other)}
    assert foreign_cas([], {"node1": other, "node2": None}) == {"node1": fingerprint(other)}
    assert foreign_cas([mine], {"node1": b"junk"}) == {"node1": "unreadable certificate"}
    assert len(fingerprint(mine).split(":")) == 32
