"""The cluster's certificates: a CA, per-member etcd server and peer certificates, a client cert.

Generated locally with `cryptography` into the cluster state folder (private keys 0600, folder
0700) and reused on every run: a certificate is made again only when it is missing, no longer
matches its host (name or address), was signed by another CA, or expires within 30 days.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from overlayctl import paths as hostpaths

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)
CLIENT_NAME = "overlayctl-client"


@dataclass(frozen=True)
class Member:
    """What a member certificate must name."""

    name: str
    address: str


@dataclass(frozen=True)
class KeyPair:
    cert: bytes  # PEM
    key: bytes  # PEM, never logged or shown


_CaPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class _Leaf:
    name: str  # file stem in the PKI folder
    sans: list[x509.GeneralName]
    usages: list[x509.ObjectIdentifier]
    common_name: str | None = None


class Pki:
    """The certificates of one cluster, kept under STATE_DIR/pki."""

    def __init__(self, state_dir: Path, cluster: str, write: bool = True) -> None:
        """WRITE False (`plan`): what would be made is kept in memory; nothing is written."""
        self.dir = state_dir / "pki"
        self.cluster = cluster
        self._renew = False
        self._write_files = write
        self._unwritten: dict[str, bytes] = {}  # file name -> PEM, when WRITE is False

    # -- public ------------------------------------------------------------------------------
    def ensure(self, members: list[Member], renew_leaves: bool = False) -> list[str]:
        """Create or renew what is needed; returns the names of the files (re)made.

        RENEW_LEAVES: make every member and client certificate again (same CA), as
        `certs rotate` does; hosts keep trusting the CA, so they accept old and new alike.
        """
        self._renew = renew_leaves
        if self._write_files:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)
        made: list[str] = []
        ca = self._ensure_ca(made)
        for m in members:
            for kind in ("server", "peer"):
                self._ensure_leaf(ca, _Leaf(f"{m.name}-{kind}", _member_sans(m), _EKU_BOTH), made)
        client = _Leaf("client", [], [ExtendedKeyUsageOID.CLIENT_AUTH], CLIENT_NAME)
        self._ensure_leaf(ca, client, made)
        return made

    def ca_cert(self) -> bytes:
        return self._read("ca.crt")

    def pair(self, name: str) -> KeyPair:
        return KeyPair(self._read(f"{name}.crt"), self._read(f"{name}.key"))

    def _read(self, file: str) -> bytes:
        if file in self._unwritten:
            return self._unwritten[file]
        return (self.dir / file).read_bytes()

    def host_files(self, member: str | None) -> dict[str, bytes]:
        """Remote path -> content of each PKI file a host needs (MEMBER None: not etcd)."""
        client = self.pair("client")
        files = {
            hostpaths.CA_CERT: self.ca_cert(),
            hostpaths.ETCD_CLIENT_CERT: client.cert,
            hostpaths.ETCD_CLIENT_KEY: client.key,
        }
        if member is not None:
            server, peer = self.pair(f"{member}-server"), self.pair(f"{member}-peer")
            files |= {
                hostpaths.ETCD_SERVER_CERT: server.cert,
                hostpaths.ETCD_SERVER_KEY: server.key,
                hostpaths.ETCD_PEER_CERT: peer.cert,
                hostpaths.ETCD_PEER_KEY: peer.key,
            }
        return files

    def client_paths(self) -> tuple[Path, Path, Path]:
        """(ca, cert, key) on this workstation, for an etcd client run from here."""
        return self.dir / "ca.crt", self.dir / "client.crt", self.dir / "client.key"

    # -- internals ---------------------------------------------------------------------------
    def _ensure_ca(self, made: list[str]) -> _CaPair:
        cert_path, key_path = self.dir / "ca.crt", self.dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - _now() > RENEW_BEFORE:
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
                return cert, key  # type: ignore[return-value]
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"overlayctl {self.cluster} CA")])
        cert = (
            _builder(name, name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self._write("ca", cert, key)
        made.append("ca")
        return cert, key

    def _ensure_leaf(self, ca: _CaPair, leaf: _Leaf, made: list[str]) -> None:
        ca_cert, ca_key = ca
        name, sans = leaf.name, leaf.sans
        cert_path = self.dir / f"{name}.crt"
        if cert_path.exists() and (self.dir / f"{name}.key").exists() and not self._renew:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if _still_good(cert, ca_cert, sans):
                return
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name or name)])
        builder = (
            _builder(subject, ca_cert.subject, key.public_key(), LEAF_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(leaf.usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        self._write(name, builder.sign(ca_key, hashes.SHA256()), key)
        made.append(name)

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        if not self._write_files:
            self._unwritten |= {f"{name}.key": key_pem, f"{name}.crt": cert_pem}
            return
        _write_private(self.dir / f"{name}.key", key_pem)
        (self.dir / f"{name}.crt").write_bytes(cert_pem)


_EKU_BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _member_sans(m: Member) -> list[x509.GeneralName]:
    return [
        x509.DNSName(m.name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(m.address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]


def _still_good(cert: x509.Certificate, ca: x509.Certificate, sans: list) -> bool:
    if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, x509.InvalidSignature):
        return False
    try:
        have = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        have = []
    return sorted(map(str, have)) == sorted(map(str, sans))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def foreign_cas(local: bytes | None, on_hosts: dict[str, bytes | None]) -> dict[str, str]:
    """Pure: the hosts whose CA certificate is not LOCAL -> that CA's fingerprint.

    Hosts without a CA are not listed (a fresh host); an unreadable certificate counts as
    foreign, fingerprinted by its bytes.
    """
    found = {}
    for host, pem in on_hosts.items():
        if pem is None or pem == local:
            continue
        try:
            found[host] = fingerprint(pem)
        except ValueError:
            found[host] = "unreadable certificate"
    return found
