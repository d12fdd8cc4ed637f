"""etcd v3 over gRPC through the ``pyetcd`` library (python-etcd3's API): ``--etcd-transport grpc``.

The only module that imports the library (and grpc). It costs every agent about 0.2 CPU-s and
15 MB at start (grpc, protobuf, asyncio), which is why the default transport is the standard
library one in agent/etcd/gateway.py; this one stays for operators who want the library client.
gRPC reconnects each channel by itself (short backoff) and pings idle watch streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pyetcd
from pyetcd import exceptions as pyexc

from agent.etcd.base import EtcdClientBase, auth_is_off, classify
from agent.etcd.types import (
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyRange,
    KeyValue,
    WatchCallback,
    WatchEvent,
    WatchStream,
)

log = logging.getLogger(__name__)

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


def translate(exc: BaseException) -> EtcdError:
    """Map a library or gRPC exception to our exception set."""
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, pyexc.RevisionCompactedError):
        return EtcdCompacted(int(exc.compacted_revision))
    rpc = _grpc_error(exc)
    status = rpc.code() if rpc is not None and hasattr(rpc, "code") else None
    details = (rpc.details() if rpc is not None and hasattr(rpc, "details") else None) or str(exc)
    code = status.value[0] if isinstance(status, grpc.StatusCode) else None
    result = classify(code, details)
    if type(result) is EtcdError and isinstance(exc, _UNAVAILABLE_EXC):
        return EtcdUnavailable(details or "etcd unavailable")
    if type(result) is EtcdError:
        return EtcdError(f"{type(exc).__name__}: {details}")
    return result


class GrpcEtcdClient(EtcdClientBase):
    """The etcd client over gRPC (see :class:`agent.etcd.base.EtcdClientBase`)."""

    transport = "grpc"

    def _translate(self, exc: BaseException) -> EtcdError:
        return translate(exc)

    def _open(self, index: int) -> Any:
        ep = self.endpoints[index]
        ca, cert, key = self._tls
        creds = grpc.ssl_channel_credentials(ca, key, cert) if ep.secure else None
        lib_ep = pyetcd.Endpoint(
            ep.host, ep.port, secure=ep.secure, creds=creds, time_retry=0, opts=_GRPC_OPTIONS
        )
        user, password = self._auth
        try:
            try:
                cli = pyetcd.MultiEndpointEtcd3Client(
                    endpoints=[lib_ep], timeout=self.timeout, user=user, password=password
                )
            except Exception as exc:
                if not user or not auth_is_off(translate(exc)):
                    raise
                # Authentication is off (see agent.etcd.base.AUTH_NOT_ENABLED): no token.
                cli = pyetcd.MultiEndpointEtcd3Client(endpoints=[lib_ep], timeout=self.timeout)
        except Exception:
            lib_ep.close()
            raise
        # The token also travels as plain metadata; gRPC refuses call credentials on http.
        cli.call_credentials = None
        return cli

    # -- key/value ---------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None."""
        resp = self._call("get", lambda c: c.get_response(key))
        return _kv(resp.kvs[0]) if resp.count > 0 else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` and the revision of that snapshot."""
        resp = self._call("get_prefix", lambda c: c.get_prefix_response(prefix))
        return [_kv(kv) for kv in resp.kvs], int(resp.header.revision)

    def _raw_txn(self, what: str, build: Callable[[Any], tuple[list, list, list]]) -> Any:
        """One Txn through the library's stub: its own ``transaction`` drops the revision."""

        def run(c: Any) -> Any:
            compare, success, failure = build(c)
            request = pyetcd.etcdrpc.TxnRequest(
                compare=[x.build_message() for x in compare],
                success=c._ops_to_requests(success),
                failure=c._ops_to_requests(failure),
            )
            return c.kvstub.Txn(
                request, c.timeout, credentials=c.call_credentials, metadata=c.metadata
            )

        return self._call(what, run)

    @staticmethod
    def _get_op(c: Any, what: KeyRange) -> Any:
        end = pyetcd.utils.prefix_range_end(pyetcd.utils.to_bytes(what.key))
        return c.transactions.get(what.key, end if what.prefix else None)

    def get_ranges(self, ranges: Sequence[KeyRange]) -> tuple[list[list[KeyValue]], int]:
        """Several reads in one request, all at one revision, which is returned too."""
        resp = self._raw_txn("get_ranges", lambda c: ([], [self._get_op(c, r) for r in ranges], []))
        found = [[_kv(kv) for kv in r.response_range.kvs] for r in resp.responses]
        return found, int(resp.header.revision)

    def put_else_get(
        self, key: str, value: bytes | str, lease_id: int, other: KeyRange, mod_revision: int = 0
    ) -> tuple[bool, list[KeyValue], int]:
        """:meth:`create` (``mod_revision`` 0) or :meth:`replace`, and when that fails,
        OTHER's keys in the same request."""

        def build(c: Any) -> tuple[list, list, list]:
            put = c.transactions.put(key, value, lease=lease_id or None)
            compare = (
                c.transactions.mod(key) == mod_revision
                if mod_revision
                else c.transactions.version(key) == 0
            )
            return [compare], [put], [self._get_op(c, other)]

        resp = self._raw_txn("create", build)
        if resp.succeeded:
            return True, [], int(resp.header.revision)
        kvs = [_kv(kv) for kv in resp.responses[0].response_range.kvs] if resp.responses else []
        return False, kvs, int(resp.header.revision)

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

    def _keepalive_once(self, session: Any, lease_id: int) -> int:
        responses = list(session.refresh_lease(lease_id))
        return int(responses[0].TTL) if responses else 0

    def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 if the lease does not exist."""
        info = self._call("lease ttl", lambda c: c.get_lease_info(lease_id))
        return int(info.TTL)

    def _revoke_once(self, session: Any, lease_id: int) -> None:
        session.revoke_lease(lease_id)

    # -- watch -------------------------------------------------------------------------------

    def watch(
        self,
        what: KeyRange,
        start_revision: int | None = None,
        callback: WatchCallback | None = None,
    ) -> WatchStream:
        """Watch one key or a prefix from ``start_revision`` (inclusive).

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
            if what.prefix:
                return c.add_watch_prefix_callback(what.key, on_response, **kwargs)
            return c.add_watch_callback(what.key, on_response, **kwargs)

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
