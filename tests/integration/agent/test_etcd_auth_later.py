"""An agent given a user and password before etcd's authentication is on (how `init` upgrades a
running cluster: agents get their credentials first, `auth enable` comes last) must keep
working across the switch, on a real etcd, over both transports.
"""

from __future__ import annotations

import subprocess

import pytest

from agent.etcd import TRANSPORTS, EtcdAuthError
from tests.integration.conftest import EtcdServer

pytestmark = pytest.mark.lab

SECRET = "host-s3cret"  # noqa: S105 - a throwaway etcd


def _etcdctl(server: EtcdServer, *args: str, stdin: str = "") -> None:
    subprocess.run(
        ["etcdctl", f"--endpoints={server.url}", *args],
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
        _etcdctl(own_etcd, "user", "add", "root", "--interactive=false", stdin="rootpw\n")
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
