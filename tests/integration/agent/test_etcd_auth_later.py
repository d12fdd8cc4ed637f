"""An agent given a user and password before etcd's authentication is on (how `init` upgrades a
running cluster: agents get their credentials first, `auth enable` comes last) must keep
working across the switch, on a real etcd, over both transports.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.etcd import TRANSPORTS, EtcdAuthError, EtcdError
from tests.integration.conftest import EtcdServer, pki_tls

pytestmark = pytest.mark.lab

SECRET = "host-s3cret"  # noqa: S105 - a throwaway etcd
ROOT_SECRET = "rootpw"  # noqa: S105 - the same


def _etcdctl(server: EtcdServer, *args: str, stdin: str = "") -> None:
    subprocess.run(
        ["etcdctl", f"--endpoints={server.url}", "--command-timeout=5s", *args],
        check=True, capture_output=True, timeout=20, input=stdin.encode(),
    )  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_before_auth_is_on_then_after(own_etcd: EtcdServer, transport: str) -> None:
    """Auth off: the login answer 'authentication is not enabled' is no failure, calls go on
    without a token. Auth switched on under the same client: its next call logs in and works.
    A user that is then deleted (a revoked host) is refused."""
    with own_etcd.client(transport, username="node4", password=SECRET) as cli:
        cli.put("/overlay/subnets/a", b"1")  # auth is off: no token, no failure
        assert cli.get("/overlay/subnets/a").value == b"1"  # type: ignore[union-attr]
        _etcdctl(own_etcd, "user", "add", "root", "--interactive=false", stdin=ROOT_SECRET + "\n")
        _etcdctl(own_etcd, "user", "add", "node4", "--interactive=false", stdin=SECRET + "\n")
        _etcdctl(own_etcd, "role", "add", "overlay-host")
        _etcdctl(own_etcd, "role", "grant-permission", "overlay-host", "--prefix=true",
                 "readwrite", "/overlay/subnets/")  # fmt: skip
        _etcdctl(own_etcd, "user", "grant-role", "node4", "overlay-host")
        _etcdctl(own_etcd, "auth", "enable")
        cli.put("/overlay/subnets/b", b"2")  # the same client, now with a token
        assert cli.get("/overlay/subnets/b").value == b"2"  # type: ignore[union-attr]
        with pytest.raises(EtcdAuthError):
            cli.put("/overlay/config", b"{}")  # the role allows subnets/ only
        _etcdctl(own_etcd, "--user=root:rootpw", "user", "delete", "node4")
        with pytest.raises(EtcdAuthError):
            cli.get("/overlay/subnets/b")


def test_a_host_certificate_through_the_gateway_with_auth_and_client_certs(tmp_path: Path) -> None:
    """What init sets up, on a real etcd with client certificates: the host's certificate (no
    CN, overlayctl.pki) and its password work through the JSON gateway; a certificate with a CN
    is refused there whatever the password (etcd cannot carry its identity through the
    gateway), which is why host certificates carry none. Over gRPC the admin's CN root is root."""
    files, tls = pki_tls(tmp_path / "state", ["node4"])
    server = EtcdServer(tmp_path / "etcd", tls=tls)
    server.workdir.mkdir()
    server.start()
    admin = ("--cacert", tls["ca"], "--cert", tls["client_cert"], "--key", tls["client_key"])
    try:
        root = ROOT_SECRET + "\n"
        _etcdctl(server, *admin, "user", "add", "root", "--interactive=false", stdin=root)
        _etcdctl(server, *admin, "user", "grant-role", "root", "root")
        _etcdctl(server, *admin, "user", "add", "node4", "--interactive=false",
                 stdin=SECRET + "\n")  # fmt: skip
        _etcdctl(server, *admin, "role", "add", "overlay-host")
        _etcdctl(server, *admin, "role", "grant-permission", "overlay-host", "--prefix=true",
                 "readwrite", "/overlay/subnets/")  # fmt: skip
        _etcdctl(server, *admin, "user", "grant-role", "node4", "overlay-host")
        _etcdctl(server, *admin, "auth", "enable")
        _etcdctl(server, *admin, "put", "/overlay/config", "{}")  # the admin's CN: root
        host = {"ca_file": tls["ca"], "cert_file": str(files / "node4-client.crt"),
                "key_file": str(files / "node4-client.key")}  # fmt: skip
        with server.client("http", username="node4", password=SECRET, **host) as cli:
            cli.put("/overlay/subnets/a", b"1")
            with pytest.raises(EtcdAuthError):
                cli.put("/overlay/config", b"{}")
        with (
            server.client("http", username="root", password=ROOT_SECRET) as cn,  # admin.crt: a CN
            pytest.raises(EtcdError, match="CommonName"),
        ):
            cn.get("/overlay/config")
    finally:
        server.stop()
