"""agent.etcd against a real etcd: key/values, leases, watch, failover, TLS and auth.

Every test runs once per transport (the JSON gateway and gRPC): both must behave the same.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.etcd import (
    TRANSPORTS,
    EtcdAuthError,
    EtcdClientBase,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    KeyRange,
    client_class,
)
from tests.integration.conftest import EtcdServer, free_port

pytestmark = pytest.mark.lab


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def etcd(etcd_server: EtcdServer, transport: str) -> Iterator[EtcdClientBase]:
    """A client of the shared etcd over TRANSPORT."""
    with etcd_server.client(transport) as cli:
        yield cli


def test_kv_create_replace_delete(etcd: EtcdClientBase, prefix: str) -> None:
    key = f"{prefix}/k"
    assert etcd.get(key) is None
    assert etcd.create(key, b"one")
    assert not etcd.create(key, b"two")
    kv = etcd.get(key)
    assert kv is not None and kv.value == b"one" and kv.lease_id == 0
    assert not etcd.replace(key, b"x", kv.mod_revision - 1)
    assert etcd.replace(key, b"three", kv.mod_revision)
    kvs, revision = etcd.get_prefix(prefix + "/")
    assert [(k.key, k.value) for k in kvs] == [(key, b"three")]
    assert revision >= kvs[0].mod_revision
    assert etcd.delete(key) and not etcd.delete(key)


def test_ranges_in_one_request_at_one_revision(etcd: EtcdClientBase, prefix: str) -> None:
    """get_ranges: a missing key, a key and a prefix, read together; put_else_get hands
    back the prefix's keys only when the key already existed."""
    assert etcd.create(f"{prefix}/config", b"c")
    rev = etcd.put(f"{prefix}/d/b", b"2")
    etcd.put(f"{prefix}/d/a", b"1")
    (missing, config, under), revision = etcd.get_ranges(
        [KeyRange(f"{prefix}/nope"), KeyRange(f"{prefix}/config"), KeyRange(f"{prefix}/d/", True)]
    )
    assert missing == [] and [kv.value for kv in config] == [b"c"]
    assert [(kv.key, kv.value) for kv in under] == [
        (f"{prefix}/d/a", b"1"),
        (f"{prefix}/d/b", b"2"),
    ]
    assert revision == under[0].mod_revision > rev
    made, kvs, made_rev = etcd.put_else_get(
        f"{prefix}/d/c", b"3", 0, KeyRange(f"{prefix}/d/", True)
    )
    assert made and kvs == [] and made_rev == revision + 1
    made, kvs, now = etcd.put_else_get(f"{prefix}/d/c", b"4", 0, KeyRange(f"{prefix}/d/", True))
    assert not made and now == made_rev
    assert [(kv.key, kv.value) for kv in kvs][-1] == (f"{prefix}/d/c", b"3") and len(kvs) == 3
    made, kvs, _ = etcd.put_else_get(f"{prefix}/d/c", b"5", 0, KeyRange(f"{prefix}/d/", True), 1)
    assert not made and len(kvs) == 3  # changed since revision 1: refused
    made, kvs, rev5 = etcd.put_else_get(
        f"{prefix}/d/c", b"5", 0, KeyRange(f"{prefix}/d/", True), made_rev
    )
    assert made and kvs == [] and rev5 == made_rev + 1


def test_lease_grant_refresh_revoke(etcd: EtcdClientBase, prefix: str) -> None:
    lease_id, ttl = etcd.lease_grant(30)
    assert ttl == 30
    assert etcd.create(f"{prefix}/l", b"v", lease_id=lease_id)
    assert etcd.get(f"{prefix}/l").lease_id == lease_id  # type: ignore[union-attr]
    assert etcd.lease_refresh(lease_id) == 30
    assert 0 < etcd.lease_ttl(lease_id) <= 30
    assert etcd.lease_revoke(lease_id)
    assert etcd.get(f"{prefix}/l") is None
    assert not etcd.lease_revoke(lease_id)
    with pytest.raises(EtcdLeaseNotFound):
        etcd.lease_refresh(lease_id)
    with pytest.raises(EtcdLeaseNotFound):
        etcd.create(f"{prefix}/m", b"v", lease_id=lease_id)


def test_watch_events_and_compaction(etcd: EtcdClientBase, prefix: str) -> None:
    _, start = etcd.get_prefix(prefix)
    with etcd.watch_prefix(prefix + "/", start + 1) as stream:
        etcd.put(f"{prefix}/a", b"1")
        etcd.delete(f"{prefix}/a")
        seen = []
        for _ in range(10):
            seen += stream.get(timeout=2) or []
            if len(seen) >= 2:
                break
        assert [(e.kind, e.kv.key) for e in seen] == [
            ("put", f"{prefix}/a"),
            ("delete", f"{prefix}/a"),
        ]
    last = etcd.put(f"{prefix}/b", b"2")
    etcd.compact(last)
    with pytest.raises(EtcdCompacted):
        stream = etcd.watch_prefix(prefix + "/", start + 1)
        stream.get(timeout=5)


def test_status_and_members(etcd: EtcdClientBase) -> None:
    status = etcd.status()
    assert status["version"].startswith("3.")
    members = etcd.members()
    assert len(members) == 1 and members[0]["client_urls"]


def test_failover_to_the_next_endpoint(
    etcd_server: EtcdServer, prefix: str, transport: str
) -> None:
    client = client_class(transport)
    dead = f"http://127.0.0.1:{free_port()}"
    with client([dead, etcd_server.url], timeout=2) as cli:
        cli.put(f"{prefix}/f", b"ok")
        assert cli.current_endpoint == etcd_server.url
        assert cli.get(f"{prefix}/f").value == b"ok"  # type: ignore[union-attr]
    with (
        client([dead, f"http://127.0.0.1:{free_port()}"], timeout=2) as cli,
        pytest.raises(EtcdUnavailable, match="every endpoint"),
    ):
        cli.get("/x")


def _cert(  # noqa: PLR0917
    subject: str, key, issuer=None, issuer_key=None, ca=False, ip=None
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, str]:
    """A throwaway CA, a server cert for 127.0.0.1 and a client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, ca=True)
    files: dict[str, str] = {}

    def save(name: str, cert: x509.Certificate, key) -> None:
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files[f"{name}_cert"] = str(directory / f"{name}.pem")
        files[f"{name}_key"] = str(directory / f"{name}-key.pem")

    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        save(name, _cert(name, key, ca, ca_key, ip=ip), key)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["ca"] = str(directory / "ca.pem")
    return files


def test_tls_client_certs_required(tmp_path: Path, transport: str) -> None:
    client = client_class(transport)
    tls = make_pki(tmp_path / "pki")
    server = EtcdServer(tmp_path / "etcd-tls", tls=tls)
    server.workdir.mkdir()
    server.start()
    try:
        with server.client(transport) as cli:
            cli.put("/tls/k", b"secure")
            assert cli.get("/tls/k").value == b"secure"  # type: ignore[union-attr]
        with (
            client([server.url], ca_file=tls["ca"], timeout=2) as certless,
            pytest.raises(EtcdError),
        ):
            certless.get("/tls/k")
        with (
            client([server.url.replace("https", "http")], timeout=2) as plain,
            pytest.raises(EtcdError),
        ):
            plain.get("/tls/k")
    finally:
        server.stop()


def test_user_password(own_etcd: EtcdServer, transport: str) -> None:
    def etcdctl(*args: str) -> None:
        subprocess.run(
            ["etcdctl", f"--endpoints={own_etcd.url}", *args],
            check=True,
            capture_output=True,
            timeout=20,
        )

    etcdctl("user", "add", "root", "--new-user-password=s3cret", "--interactive=false")
    etcdctl("auth", "enable")
    secret = "s3cret"  # noqa: S105 - a throwaway etcd
    with own_etcd.client(transport, username="root", password=secret) as cli:
        cli.put("/auth/k", b"v")
        assert cli.get("/auth/k").value == b"v"  # type: ignore[union-attr]
    with own_etcd.client(transport) as anonymous, pytest.raises(EtcdAuthError):
        anonymous.put("/auth/k", b"nope")
    with pytest.raises(EtcdAuthError):
        own_etcd.client(transport, username="root", password=secret[::-1]).get("/auth/k")
