"""The cluster PKI: made once, reused, renewed only for what changed; keys private."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from overlayctl import paths as hostpaths
from overlayctl.pki import Member, Pki

MEMBERS = [Member("node1", "192.168.255.154"), Member("node2", "192.168.255.155")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_makes_everything_with_private_keys(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    made = pki.ensure(MEMBERS)
    assert made == ["ca", "node1-server", "node1-peer", "node2-server", "node2-peer", "client"]
    assert _mode(pki.dir) == 0o700
    for key in pki.dir.glob("*.key"):
        assert _mode(key) == 0o600, key
    assert not list(pki.dir.glob("*.tmp"))


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS)
    before = {p.name: p.read_bytes() for p in pki.dir.iterdir()}
    assert pki.ensure(MEMBERS) == []
    assert {p.name: p.read_bytes() for p in pki.dir.iterdir()} == before


def test_a_changed_address_renews_only_that_members_certs(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS)
    moved = [MEMBERS[0], Member("node2", "192.168.255.200")]
    assert pki.ensure(moved) == ["node2-server", "node2-peer"]
    cert = x509.load_pem_x509_certificate(pki.pair("node2-server").cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.168.255.200" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_certificates_chain_to_the_ca_and_say_what_they_are_for(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS)
    ca = x509.load_pem_x509_certificate(pki.ca_cert())
    client = x509.load_pem_x509_certificate(pki.pair("client").cert)
    client.verify_directly_issued_by(ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in eku] == ["clientAuth"]
    server = x509.load_pem_x509_certificate(pki.pair("node1-server").cert)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"node1", "localhost"}


def test_host_files_give_members_server_and_peer_keys_and_others_only_the_client(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path, "demo")
    pki.ensure(MEMBERS)
    member = pki.host_files("node1")
    plain = pki.host_files(None)
    assert set(plain) == {hostpaths.CA_CERT, hostpaths.ETCD_CLIENT_CERT, hostpaths.ETCD_CLIENT_KEY}
    assert set(member) == {f.path for f in hostpaths.PKI_FILES}
    assert member[hostpaths.ETCD_SERVER_KEY].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_foreign_cas_names_hosts_that_trust_another_ca(tmp_path) -> None:
    """A second state folder must not push a new CA over a running cluster's (issue #16)."""
    from overlayctl.pki import Member, Pki, fingerprint, foreign_cas

    ours, theirs = Pki(tmp_path / "a", "c"), Pki(tmp_path / "b", "c")
    for pki in (ours, theirs):
        pki.ensure([Member("node1", "192.0.2.1")])
    mine, other = ours.ca_cert(), theirs.ca_cert()
    assert foreign_cas([mine], {"node1": mine, "node2": None}) == {}
    assert foreign_cas([mine], {"node1": other}) == {"node1": fingerprint(other)}
    assert foreign_cas([], {"node1": other, "node2": None}) == {"node1": fingerprint(other)}
    assert foreign_cas([mine], {"node1": b"junk"}) == {"node1": "unreadable certificate"}
    assert len(fingerprint(mine).split(":")) == 32
