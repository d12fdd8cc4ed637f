"""The one adapter around the etcd v3 client library (``pyetcd``, python-etcd3 compatible).

Nothing else imports the library: the agent (and later overlayctl) uses :class:`EtcdClient`,
plain dataclasses and the small exception set below, so the library can be swapped.

Failover: one library client per endpoint, created lazily and kept; a call that fails with a
connection error is retried once on each of the other endpoints, in order, before
:class:`EtcdUnavailable` is raised. gRPC reconnects each channel by itself (short backoff).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pyetcd
from pyetcd import exceptions as pyexc

from agent.etcd_types import (
    Endpoint,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    KeyValue,
    WatchEvent,
    WatchStream,
    parse_endpoint,
)

__all__ = [
    "EtcdAuthError",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdLeaseNotFound",
    "EtcdUnavailable",
    "KeyValue",
    "WatchEvent",
    "WatchStream",
    "parse_endpoint",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
# Reconnect quickly after an etcd restart; detect a dead peer on an idle watch stream.
_GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 300),
    ("grpc.min_reconnect_backoff_ms", 300),
    ("grpc.max_reconnect_backoff_ms", 3000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=bytes(raw.key).decode("utf-8", "replace"),
        value=bytes(raw.value),
        create_revision=int(raw.create_revision),
        mod_revision=int(raw.mod_revision),
        version=int(raw.version),
        lease_id=int(raw.lease),
    )


def _grpc_error(exc: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind a library exception (the library drops its details)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, grpc.RpcError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_UNAVAILABLE_EXC = (
    pyexc.ConnectionFailedError,
    pyexc.ConnectionTimeoutError,
    pyexc.NoServerAvailableError,
    pyexc.InternalServerError,
    pyexc.WatchTimedOut,
)
_UNAVAILABLE_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
)
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_AUTH_WORDS = ("auth", "user name", "password", "permission")


def translate(exc: BaseException) -> EtcdError:
    """Map a library or gRPC exception to our exception set."""
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, pyexc.RevisionCompactedError):
        return EtcdCompacted(int(exc.compacted_revision))
    rpc = _grpc_error(exc)
    code = rpc.code() if rpc is not None and hasattr(rpc, "code") else None
    details = (rpc.details() if rpc is not None and hasattr(rpc, "details") else None) or str(exc)
    result: EtcdError
    if "lease not found" in details:
        result = EtcdLeaseNotFound(details)
    elif "compacted" in details:
        result = EtcdCompacted(0)
    elif code in _AUTH_CODES or (
        code == grpc.StatusCode.INVALID_ARGUMENT and any(w in details for w in _AUTH_WORDS)
    ):
        result = EtcdAuthError(details)
    elif isinstance(exc, _UNAVAILABLE_EXC) or code in _UNAVAILABLE_CODES:
        result = EtcdUnavailable(details or "etcd unavailable")
    else:
        result = EtcdError(f"{type(exc).__name__}: {details}")
    return result


class EtcdClient:
    """A thread-safe etcd v3 client over several endpoints with failover, TLS and auth."""

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...] | str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        urls = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        self.endpoints = tuple(parse_endpoint(u) for u in urls if u.strip())
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        if bool(cert_file) != bool(key_file):
            raise ValueError("etcd client certificate and key must be given together")
        if bool(username) != bool(password):
            raise ValueError("etcd username and password must be given together")
        self._tls = tuple(self._read(p) for p in (ca_file, cert_file, key_file))
        self._auth = (username, password)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._clients: dict[int, Any] = {}
        self._current = 0

    # -- connection management -------------------------------------------------------------

    @property
    def current_endpoint(self) -> str:
        """The URL of the endpoint used for the next call."""
        return self.endpoints[self._current].url

    def _credentials(self, ep: Endpoint) -> Any:
        if not ep.secure:
            return None
        ca, cert, key = self._tls
        return grpc.ssl_channel_credentials(ca, key, cert)

    @staticmethod
    def _read(path: str | None) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read etcd TLS file {path}: {exc.strerror}") from exc

    def _library_client(self, index: int) -> Any:
        with self._lock:
            cli = self._clients.get(index)
            if cli is not None:
                return cli
        ep = self.endpoints[index]
        lib_ep = pyetcd.Endpoint(
            ep.host,
            ep.port,
            secure=ep.secure,
            creds=self._credentials(ep),
            time_retry=0,
            opts=_GRPC_OPTIONS,
        )
        user, password = self._auth
        try:
            cli = pyetcd.MultiEndpointEtcd3Client(
                endpoints=[lib_ep], timeout=self.timeout, user=user, password=password
            )
        except Exception:
            lib_ep.close()
            raise
        # The token also travels as plain metadata; gRPC refuses call credentials on http.
        cli.call_credentials = None
        with self._lock:
            return self._clients.setdefault(index, cli)

    def _forget(self, index: int) -> None:
        """Drop a client (stale auth token); in-flight calls keep their own reference."""
        with self._lock:
            self._clients.pop(index, None)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(library_client)``, failing over across endpoints on connection errors."""
        errors: list[str] = []
        start = self._current
        count = len(self.endpoints)
        for step in range(count):
            index = (start + step) % count
            auth_retry = bool(self._auth[0])
            while True:
                try:
                    result = fn(self._library_client(index))
                except Exception as exc:
                    err = translate(exc)
                    if isinstance(err, EtcdAuthError) and auth_retry:
                        auth_retry = False  # the token may have expired: authenticate again
                        self._forget(index)
                        continue
                    if not isinstance(err, EtcdUnavailable):
                        raise err from exc
                    errors.append(f"{self.endpoints[index].url}: {err}")
                    break
                if index != self._current:
                    log.info("etcd: now using endpoint %s", self.endpoints[index].url)
                    self._current = index
                return result
        self._current = (start + 1) % count
        raise EtcdUnavailable(f"etcd {what} failed on every endpoint: " + "; ".join(errors))

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for cli in clients:
            try:
                cli.close()
            except Exception as exc:
                log.debug("etcd close: %s", exc)

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- key/value ---------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None."""
        resp = self._call("get", lambda c: c.get_response(key))
        return _kv(resp.kvs[0]) if resp.count > 0 else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` and the revision of that snapshot."""
        resp = self._call("get_prefix", lambda c: c.get_prefix_response(prefix))
        return [_kv(kv) for kv in resp.kvs], int(resp.header.revision)

    def put(self, key: str, value: bytes | str, lease_id: int = 0) -> int:
        """Write unconditionally; returns the new revision."""
        resp = self._call("put", lambda c: c.put(key, value, lease=lease_id or None))
        return int(resp.header.revision)

    def _txn_put(
        self, what: str, compare: Callable[[Any], Any], key: str, value: bytes | str, lease_id: int
    ) -> bool:
        def run(c: Any) -> bool:
            ok, _ = c.transaction(
                compare=[compare(c)],
                success=[c.transactions.put(key, value, lease=lease_id or None)],
                failure=[],
            )
            return bool(ok)

        return self._call(what, run)

    def create(self, key: str, value: bytes | str, lease_id: int = 0) -> bool:
        """Put only if the key does not exist (one transaction: version == 0)."""
        return self._txn_put(
            "create", lambda c: c.transactions.version(key) == 0, key, value, lease_id
        )

    def replace(self, key: str, value: bytes | str, mod_revision: int, lease_id: int = 0) -> bool:
        """Put only if the key is unchanged since ``mod_revision`` (compare-and-swap)."""
        return self._txn_put(
            "replace", lambda c: c.transactions.mod(key) == mod_revision, key, value, lease_id
        )

    def delete(self, key: str) -> bool:
        """Delete one key; True if it existed."""
        return bool(self._call("delete", lambda c: c.delete(key)))

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete the key only if it is unchanged since ``mod_revision``."""

        def run(c: Any) -> bool:
            ok, _ = c.transaction(
                compare=[c.transactions.mod(key) == mod_revision],
                success=[c.transactions.delete(key)],
                failure=[],
            )
            return bool(ok)

        return self._call("delete", run)

    def compact(self, revision: int) -> None:
        """Compact the history up to ``revision`` (tests and maintenance)."""
        self._call("compact", lambda c: c.compact(revision, physical=True))

    # -- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (id, granted TTL in seconds)."""
        lease = self._call("lease grant", lambda c: c.lease(int(ttl)))
        return int(lease.id), int(lease.ttl)

    def lease_refresh(self, lease_id: int) -> int:
        """Keep the lease alive once; returns the new TTL. EtcdLeaseNotFound if it is gone."""
        responses = self._call("lease refresh", lambda c: list(c.refresh_lease(lease_id)))
        ttl = int(responses[0].TTL) if responses else 0
        if ttl <= 0:
            raise EtcdLeaseNotFound(f"etcd lease {lease_id:x} not found (expired or revoked)")
        return ttl

    def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 if the lease does not exist."""
        info = self._call("lease ttl", lambda c: c.get_lease_info(lease_id))
        return int(info.TTL)

    def lease_revoke(self, lease_id: int) -> bool:
        """Revoke the lease (its keys are deleted); False if it did not exist."""
        try:
            self._call("lease revoke", lambda c: c.revoke_lease(lease_id))
        except EtcdLeaseNotFound:
            return False
        return True

    # -- watch -------------------------------------------------------------------------------

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int | None = None,
        callback: Callable[[list[WatchEvent] | EtcdError], None] | None = None,
    ) -> WatchStream:
        """Watch ``prefix`` from ``start_revision`` (inclusive).

        Without ``callback``, read the returned stream. With it, ``callback`` is called from the
        library's thread with each batch of events, or once with an :class:`EtcdError`.
        """
        stream = WatchStream()

        def on_response(resp: Any) -> None:
            if resp is None or isinstance(resp, BaseException):
                item: Any = (
                    translate(resp)
                    if resp is not None
                    else EtcdUnavailable("watch stream closed by the server")
                )
                if callback is not None:
                    callback(item)
                    return
            else:
                item = [
                    WatchEvent(
                        "put" if isinstance(e, pyetcd.events.PutEvent) else "delete",
                        _kv(e._event.kv),
                    )
                    for e in resp.events
                ]
                if callback is not None:
                    callback(item)
                    return
            stream._deliver(item)

        used: list[Any] = []

        def start(c: Any) -> Any:
            used.append(c)
            kwargs = {"start_revision": start_revision} if start_revision else {}
            return c.add_watch_prefix_callback(prefix, on_response, **kwargs)

        watch_id = self._call("watch", start)
        cli = used[-1]
        stream._cancel = lambda: cli.cancel_watch(watch_id)
        return stream

    # -- cluster -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The current endpoint's status: version, leader, db size, raft index and term."""
        st = self._call("status", lambda c: c.status())
        return {
            "endpoint": self.current_endpoint,
            "version": st.version,
            "db_size": int(st.db_size),
            "leader": int(st.leader.id) if st.leader is not None else 0,
            "raft_index": int(st.raft_index),
            "raft_term": int(st.raft_term),
        }

    def members(self) -> list[dict[str, Any]]:
        """The cluster's members: id, name, peer and client URLs."""
        found = self._call("member list", lambda c: list(c.members))
        return [
            {
                "id": int(m.id),
                "name": m.name,
                "peer_urls": list(m.peer_urls),
                "client_urls": list(m.client_urls),
            }
            for m in found
        ]
