"""agent.etcd's pure parts: endpoint parsing and argument checks (no server needed)."""

from __future__ import annotations

import pytest

from agent.etcd import EtcdClient, parse_endpoint


@pytest.mark.parametrize(
    ("url", "host", "port", "secure"),
    [
        ("http://127.0.0.1:2379", "127.0.0.1", 2379, False),
        ("https://10.0.0.1:4001", "10.0.0.1", 4001, True),
        ("127.0.0.1:12379", "127.0.0.1", 12379, False),
        (" https://etcd.example ", "etcd.example", 2379, True),
    ],
)
def test_parse_endpoint(url: str, host: str, port: int, secure: bool) -> None:
    ep = parse_endpoint(url)
    assert (ep.host, ep.port, ep.secure) == (host, port, secure)


@pytest.mark.parametrize("url", ["ftp://x:1", "http://", "http://h:99999", "https://:2379"])
def test_bad_endpoints(url: str) -> None:
    with pytest.raises(ValueError, match="invalid etcd endpoint"):
        parse_endpoint(url)


def test_client_argument_checks() -> None:
    cli = EtcdClient("http://127.0.0.1:1, http://127.0.0.1:2")
    assert [e.port for e in cli.endpoints] == [1, 2]
    with pytest.raises(ValueError, match="no etcd endpoint"):
        EtcdClient([])
    with pytest.raises(ValueError, match="together"):
        EtcdClient(["http://127.0.0.1:1"], cert_file="/c.pem")
    with pytest.raises(ValueError, match="together"):
        EtcdClient(["http://127.0.0.1:1"], username="root")


def test_unreadable_tls_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read etcd TLS file"):
        EtcdClient(["https://127.0.0.1:1"], ca_file=str(tmp_path / "missing.pem"))
