"""The agent's etcd client: one name, two transports, nothing else talks to etcd.

:class:`EtcdClient` is the default transport, etcd's HTTP/JSON gateway with the standard library
(agent/etcd/gateway.py). ``client_class("grpc")`` gives the gRPC one through the ``pyetcd`` library
(agent/etcd/grpc.py, imported only when chosen). Both share failover, TLS, auth and the error
set (agent/etcd/base.py), and pass the same tests against a real etcd. The rest of the agent
uses only the names exported here, so a transport can be swapped without touching it.
"""

from __future__ import annotations

from agent.etcd.base import EtcdClientBase
from agent.etcd.gateway import HttpEtcdClient
from agent.etcd.types import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    KeyRange,
    KeyValue,
    WatchCallback,
    WatchEvent,
    WatchStream,
    parse_endpoint,
)

__all__ = [
    "TRANSPORTS",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdClientBase",
    "EtcdCompacted",
    "EtcdError",
    "EtcdLeaseNotFound",
    "EtcdUnavailable",
    "KeyRange",
    "KeyValue",
    "WatchCallback",
    "WatchEvent",
    "WatchStream",
    "client_class",
    "parse_endpoint",
]

EtcdClient = HttpEtcdClient
TRANSPORTS = ("http", "grpc")


def client_class(transport: str = "http") -> type[EtcdClientBase]:
    """The client class of a transport: ``http`` (default) or ``grpc``."""
    if transport == "http":
        return HttpEtcdClient
    if transport == "grpc":
        from agent.etcd.grpc import GrpcEtcdClient  # noqa: PLC0415 - grpc only when chosen

        return GrpcEtcdClient
    raise ValueError(
        f"unknown etcd transport {transport!r}: expected one of {', '.join(TRANSPORTS)}"
    )
