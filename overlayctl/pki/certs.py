"""x509 for the cluster's PKI, pure: what a certificate looks like (CA, leaf, names, usages,
validity), whether one made earlier still fits, fingerprints, and the atomic file writer.

Leaves last LEAF_DAYS (90) and are made again once they end within RENEW_BEFORE (30 days), at
any `init`: renewal is routine, and a leaked key is good for weeks, not years.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 90
RENEW_BEFORE = dt.timedelta(days=30)

EKU_BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
EKU_CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass(frozen=True)
class Member:
    """What a member certificate must name."""

    name: str
    address: str


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate: its file stem in the PKI folder, names, usages and subject."""

    name: str
    sans: list[x509.GeneralName]
    usages: list[x509.ObjectIdentifier]
    subject: x509.Name


def named(common_name: str) -> x509.Name:
    """A subject of one CN: etcd's user for a gRPC client (the admin's `root`), a peer's."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def host_subject(host: str) -> x509.Name:
    """A host's client certificate subject: its name as the UID, and no CN. etcd (3.4 and
    later), with client certificates and authentication on, refuses every request through its
    JSON gateway (the agent's default transport) from a certificate with a CN, as the gateway
    cannot carry that identity; the host's user logs in with its password instead."""
    return x509.Name([x509.NameAttribute(NameOID.USER_ID, host)])


def member_sans(m: Member) -> list[x509.GeneralName]:
    return [
        x509.DNSName(m.name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(m.address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]


def still_good(cert: x509.Certificate, ca: x509.Certificate, leaf: Leaf) -> bool:
    """CERT, made earlier, is what LEAF asks for: signed by CA, the same subject and names, and
    not ending within RENEW_BEFORE. (A new subject, such as the peers' shared CN, makes it anew.)"""
    if cert.issuer != ca.subject or cert.not_valid_after_utc - now() < RENEW_BEFORE:
        return False
    if cert.subject != leaf.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        have = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        have = []
    return sorted(map(str, have)) == sorted(map(str, leaf.sans))


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    start = now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=days))
    )


def key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically (a stopped run leaves the old file or the new, never half of one); a key is
    0600 from its first byte on."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ends_within(pem: bytes, within: dt.timedelta = RENEW_BEFORE) -> dt.datetime | None:
    """When the certificate PEM ends, if that is within WITHIN from now (else None)."""
    ends = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    return ends if ends - now() < within else None


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def foreign_cas(known: Sequence[bytes], on_hosts: dict[str, bytes | None]) -> dict[str, str]:
    """Pure: the hosts whose CA file holds a certificate that is none of KNOWN -> the
    fingerprints of what it holds (`A + B` for a bundle).

    A bundle passes when each of its certificates is known (a CA replacement's rounds 1 and 2).
    Hosts without a CA are not listed (a fresh host); an unreadable file counts as foreign.
    """
    ours = {fp for pem in known for fp in _fingerprints(pem)}
    found = {}
    for host, pem in on_hosts.items():
        if pem is None:
            continue
        try:
            theirs = _fingerprints(pem)
        except ValueError:
            found[host] = "unreadable certificate"
            continue
        if not set(theirs) <= ours:
            found[host] = " + ".join(theirs)
    return found


def _fingerprints(pem: bytes) -> list[str]:
    certs = x509.load_pem_x509_certificates(pem)  # ValueError when there is none
    return [c.fingerprint(hashes.SHA256()).hex(":").upper() for c in certs]
