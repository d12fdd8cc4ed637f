"""The cluster's certificates, kept in the state folder (STATE_DIR/pki): a CA; per etcd member a
server and a peer certificate (CN overlay-etcd-peer); per host a client certificate (UID = the
host's inventory name, its etcd user, and no CN: see certs.host_subject); the admin's (CN root,
etcd's root user over gRPC), which only etcd members hold.

Generated locally with `cryptography` (private keys 0600, folder 0700) and reused on every run:
a certificate is made again only when it is missing, no longer matches its host (name, address
or CN), was signed by another CA, or expires within 30 days.

A CA replacement (`certs rotate --new-ca`) goes in three rounds, each rolled out to every host
before the next begins: 1 hosts trust both CAs (leaves still from the old one), 2 every leaf from
the new CA, 3 hosts trust the new CA alone. Meanwhile the new CA is ca-new.crt/.key beside the old
ca.crt/.key, and ca-replacement.json records the round the folder's files are at and whether it
reached every host; after round 3 the new CA takes ca.crt's place and the old one is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from overlayctl import paths as hostpaths
from overlayctl.errors import OverlayctlError
from overlayctl.pki import certs
from overlayctl.pki.certs import (
    CA_DAYS,
    EKU_BOTH,
    EKU_CLIENT,
    LEAF_DAYS,
    RENEW_BEFORE,
    Leaf,
    Member,
    builder,
    ends_within,
    host_subject,
    key_usage,
    member_sans,
    named,
    still_good,
    write_file,
)
from overlayctl.pki.identities import Identities

LEGACY_CLIENT = "client"  # the one client certificate every host shared before per-host ones
ADMIN = "admin"  # the admin certificate's file stem
REPLACEMENT = "ca-replacement.json"  # in the PKI folder while a CA replacement is under way
ROUNDS = {1: "trust both CAs", 2: "leaves from the new CA", 3: "trust the new CA only"}


@dataclass(frozen=True)
class KeyPair:
    cert: bytes  # PEM
    key: bytes  # PEM, never logged or shown


_CaPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class Replacement:
    """A CA replacement under way: ROUND (1-3, see ROUNDS) is what the state folder's files are
    at; DONE once that round reached every host (the next may begin)."""

    round: int
    done: bool

    @property
    def next_round(self) -> int:
        """The round a `certs rotate --new-ca` run works on now (4: only the clean-up is left)."""
        return self.round + 1 if self.done else self.round


class Pki:
    """The certificates of one cluster, kept under STATE_DIR/pki."""

    def __init__(self, state_dir: Path, cluster: str, write: bool = True) -> None:
        """WRITE False (`plan`): what would be made is kept in memory; nothing is written."""
        self.dir = state_dir / "pki"
        self.cluster = cluster
        self._renew = False
        self._write_files = write
        self._unwritten: dict[str, bytes] = {}  # file name -> PEM, when WRITE is False
        self.replacement = self._read_replacement()
        self.ids = Identities(self.dir, write)

    # -- public ------------------------------------------------------------------------------
    def ensure(
        self, members: list[Member], hosts: list[str], renew_leaves: bool = False
    ) -> list[str]:
        """Create or renew what is needed for MEMBERS and every host of HOSTS (its client
        certificate and etcd password); returns the names of the files (re)made.

        RENEW_LEAVES: make every member, host and admin certificate again (same CA), as
        `certs rotate` does; hosts keep trusting the CA, so they accept old and new alike.
        During a CA replacement no CA is made or renewed; leaves come from the old CA in round 1
        (those it signed are kept: hosts do not trust the new one everywhere yet), from the new
        one after. Passwords are made once and kept (a revoked host's is gone, so made anew).
        """
        self._renew = renew_leaves
        if self._write_files:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)
        made: list[str] = []
        if self.replacement is None:
            ca = self._ensure_ca(made)
        else:
            ca = self._load_ca("old" if self.replacement.round == 1 else "new")
        for m in members:
            server = Leaf(f"{m.name}-server", member_sans(m), EKU_BOTH, named(f"{m.name}-server"))
            self._ensure_leaf(ca, server, made)
            peer = Leaf(f"{m.name}-peer", member_sans(m), EKU_BOTH, named(hostpaths.ETCD_PEER_CN))
            self._ensure_leaf(ca, peer, made)
        for host in hosts:
            self._ensure_leaf(ca, Leaf(f"{host}-client", [], EKU_CLIENT, host_subject(host)), made)
        self._ensure_leaf(ca, Leaf(ADMIN, [], EKU_CLIENT, named(hostpaths.ETCD_ROOT_USER)), made)
        for user in [*hosts, hostpaths.ETCD_ROOT_USER]:
            if self.ids.ensure_password(user):
                made.append(f"{user}.password")
        if self._write_files:
            self._drop_legacy_client()
        return made

    def _drop_legacy_client(self) -> None:
        """The shared client certificate of earlier versions: hosts get their own now."""
        for ext in ("crt", "key"):
            (self.dir / f"{LEGACY_CLIENT}.{ext}").unlink(missing_ok=True)

    def leaves_ending(self) -> dict[str, dt.datetime]:
        """The leaf certificates here that end within RENEW_BEFORE -> when (`init` renews them;
        `status` says so meanwhile)."""
        found = {}
        for path in sorted(self.dir.glob("*.crt")):
            if path.stem in ("ca", "ca-new"):
                continue
            ends = ends_within(path.read_bytes())
            if ends is not None:
                found[path.stem] = ends
        return found

    def ca_cert(self) -> bytes:
        return self._read("ca.crt")

    def trusted(self) -> bytes:
        """What hosts trust (their ca.crt): this folder's CA; during a CA replacement the old
        and new CAs together in rounds 1 and 2, the new one alone in round 3."""
        if self.replacement is None:
            return self.ca_cert()
        if self.replacement.round == 3:
            return self._ca_file("new", "crt").read_bytes()
        return self._ca_file("old", "crt").read_bytes() + self._ca_file("new", "crt").read_bytes()

    def ca_ends_soon(self) -> dt.datetime | None:
        """When the CA hosts trust ends, if that is within RENEW_BEFORE (else None)."""
        ends = min(c.not_valid_after_utc for c in x509.load_pem_x509_certificates(self.trusted()))
        return ends if ends - certs.now() < RENEW_BEFORE else None

    def known_cas(self) -> list[bytes]:
        """The CA certificates a host may trust, for the check before anything is pushed: this
        folder's; during a replacement the old one and the new one (alone or together, as an
        interrupted round left them)."""
        if self.replacement is None:
            return [self.ca_cert()] if (self.dir / "ca.crt").exists() else []
        paths = {self._ca_file("new", "crt")}
        if (self.dir / "ca-new.crt").exists():  # else the old one is gone already (round 3)
            paths.add(self.dir / "ca.crt")
        return [p.read_bytes() for p in sorted(paths)]

    # -- a CA replacement ---------------------------------------------------------------------
    def begin_replacement(self) -> None:
        """Round 1 of a CA replacement: a new CA beside this one (ca-new.*), then the round
        recorded. A run stopped before the record leaves an unused ca-new, made again here."""
        if self.replacement is not None:
            return
        if not (self.dir / "ca.crt").exists():
            raise OverlayctlError(f"no CA to replace: {self.dir / 'ca.crt'} does not exist")
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        self._write(
            "ca-new", self._ca_cert(key, f"{certs.now():%Y-%m-%d} {ski.digest.hex()[:8]}"), key
        )
        self.record(Replacement(1, done=False))

    def record(self, state: Replacement) -> None:
        """The round the folder is at (written atomically: a re-run resumes from it)."""
        doc = {"round": state.round, "done": state.done, "rounds": ROUNDS}
        write_file(self.dir / REPLACEMENT, (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
        self.replacement = state

    def finish_replacement(self) -> None:
        """After round 3 reached every host: the new CA becomes ca.*, the old one is gone. Each
        step is a rename, and the record goes last, so a stopped run is finished by the next."""
        for ext in ("key", "crt"):
            new = self.dir / f"ca-new.{ext}"
            if new.exists():
                new.replace(self.dir / f"ca.{ext}")
        (self.dir / REPLACEMENT).unlink(missing_ok=True)
        self.replacement = None

    def _read_replacement(self) -> Replacement | None:
        path = self.dir / REPLACEMENT
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            state = Replacement(int(doc["round"]), bool(doc["done"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise OverlayctlError(f"{path}: not a CA replacement record ({exc})") from None
        if state.round not in ROUNDS:
            raise OverlayctlError(f"{path}: round {state.round} is not one of 1, 2, 3")
        return state

    def _ca_file(self, which: str, ext: str) -> Path:
        """The old or new CA's file during a replacement. The new CA is ca-new.* until the end,
        when each file moves onto ca.* (one may have moved already, the other not yet)."""
        if which == "old":
            return self.dir / f"ca.{ext}"
        new = self.dir / f"ca-new.{ext}"
        return new if new.exists() else self.dir / f"ca.{ext}"

    def _load_ca(self, which: str) -> _CaPair:
        try:
            cert = x509.load_pem_x509_certificate(self._ca_file(which, "crt").read_bytes())
            key = serialization.load_pem_private_key(self._ca_file(which, "key").read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise OverlayctlError(f"the {which} CA of the replacement under way in {self.dir} "
                                  f"cannot be read: {exc}") from None  # fmt: skip
        return cert, key  # type: ignore[return-value]

    def pair(self, name: str) -> KeyPair:
        return KeyPair(self._read(f"{name}.crt"), self._read(f"{name}.key"))

    def _read(self, file: str) -> bytes:
        if file in self._unwritten:
            return self._unwritten[file]
        return (self.dir / file).read_bytes()

    def host_files(self, host: str, member: bool) -> dict[str, bytes]:
        """Remote path -> content of each PKI file HOST needs: its own client certificate and
        etcd password; on a MEMBER also the server, peer and admin certificates."""
        client = self.pair(f"{host}-client")
        files = {
            hostpaths.CA_CERT: self.trusted(),
            hostpaths.ETCD_CLIENT_CERT: client.cert,
            hostpaths.ETCD_CLIENT_KEY: client.key,
            hostpaths.ETCD_AGENT_PASSWORD: (self.ids.password(host) + "\n").encode(),
        }
        if member:
            server, peer = self.pair(f"{host}-server"), self.pair(f"{host}-peer")
            admin = self.pair(ADMIN)
            files |= {
                hostpaths.ETCD_SERVER_CERT: server.cert,
                hostpaths.ETCD_SERVER_KEY: server.key,
                hostpaths.ETCD_PEER_CERT: peer.cert,
                hostpaths.ETCD_PEER_KEY: peer.key,
                hostpaths.ETCD_ADMIN_CERT: admin.cert,
                hostpaths.ETCD_ADMIN_KEY: admin.key,
            }
        return files

    # -- internals ---------------------------------------------------------------------------
    def _ensure_ca(self, made: list[str]) -> _CaPair:
        """This folder's CA, made when there is none. One near its end is kept all the same: a
        new CA pushed to a running cluster at once is one no etcd peer trusts yet (`certs rotate
        --new-ca` replaces it round by round; ensure_pki says when it is time)."""
        cert_path, key_path = self.dir / "ca.crt", self.dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            return cert, key  # type: ignore[return-value]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._ca_cert(key)
        self._write("ca", cert, key)
        made.append("ca")
        return cert, key

    def _ca_cert(self, key: ec.EllipticCurvePrivateKey, suffix: str = "") -> x509.Certificate:
        """A self-signed CA certificate. SUFFIX: a replacement's (its date and key id), so that
        hosts trusting both CAs, and people reading an issuer, can tell them apart."""
        common = f"overlayctl {self.cluster} CA" + (f" {suffix}" if suffix else "")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
        return (
            builder(name, name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )

    def _ensure_leaf(self, ca: _CaPair, leaf: Leaf, made: list[str]) -> None:
        ca_cert, ca_key = ca
        name = leaf.name
        cert_path = self.dir / f"{name}.crt"
        if cert_path.exists() and (self.dir / f"{name}.key").exists() and not self._renew:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if still_good(cert, ca_cert, leaf):
                return
        key = ec.generate_private_key(ec.SECP256R1())
        built = (
            builder(leaf.subject, ca_cert.subject, key.public_key(), LEAF_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(leaf.usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if leaf.sans:
            built = built.add_extension(x509.SubjectAlternativeName(leaf.sans), critical=False)
        self._write(name, built.sign(ca_key, hashes.SHA256()), key)
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
        write_file(self.dir / f"{name}.key", key_pem, 0o600)
        write_file(self.dir / f"{name}.crt", cert_pem, 0o644)
