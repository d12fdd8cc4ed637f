"""etcd v3 over its HTTP/JSON gateway (``/v3/...``), standard library only: the default transport.

Why not the gRPC library: importing grpc, protobuf and asyncio and opening a channel costs
every agent ~0.25 CPU-s and ~15 MB before it has done anything; with a hundred agents starting
on a small host that is most of the start-up time (benchmarks/scale.py). etcd serves the same
API as JSON over the client port (etcd 3.4 and later: ``/v3/kv/range``, ``/v3/watch``, ...),
so a small HTTP/1.1 client (agent/httpwire.py), ``ssl`` and ``json`` do the same job. Bytes
are base64 and 64-bit integers are strings in that JSON; streams (watch, lease keep-alive) are
one JSON object per line.

Each endpoint keeps a small pool of keep-alive connections for unary calls; every watch has
its own connection and reader thread, with TCP keep-alive probes so a dead peer breaks the
stream within ~25 s (the gRPC transport pings for the same reason).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.etcd_base import EtcdClientBase, classify
from agent.etcd_types import (
    Endpoint,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    KeyValue,
    WatchEvent,
    WatchStream,
)
from agent.httpwire import ClosedWithoutAnswer, Connection, Response

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

POOL_SIZE = 4
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
# A pooled connection the server closed while idle fails like this: send again, once, fresh.
_STALE = (ClosedWithoutAnswer, ConnectionResetError, BrokenPipeError)
_NETWORK_ERRORS = (OSError,)  # socket, TLS and protocol errors (agent.httpwire.HttpError)


def b64(data: bytes | str) -> str:
    """The gateway's form of a bytes field."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (etcd's rule)."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return b64(bytes(raw[: i + 1]))
    return b64(b"\0")  # all keys


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(raw.get("key")).decode("utf-8", "replace"),
        value=unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease_id=int(raw.get("lease", 0)),
    )


def _revision(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def _reply_error(status: int, body: bytes) -> EtcdError:
    """Our exception for a non-200 gateway reply."""
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        text = body[:200].decode("utf-8", "replace").strip()
        return EtcdError(f"HTTP {status} from the etcd gateway: {text or 'no body'}")
    details = str(reply.get("message") or reply.get("error") or f"HTTP {status}")
    code = reply.get("code")
    return classify(code if isinstance(code, int) else None, details)


class Gateway:
    """One endpoint: TLS context, auth token and a pool of keep-alive connections."""

    def __init__(self, client: HttpEtcdClient, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.timeout = client.timeout
        self.context = client.ssl_context() if endpoint.secure else None
        self._pool: list[Connection] = []
        self._lock = threading.Lock()
        self.token = ""
        user, password = client.credentials()
        if user:
            reply = self.post("/v3/auth/authenticate", {"name": user, "password": password})
            self.token = str(reply.get("token", ""))

    def connect(self, timeout: float | None) -> Connection:
        return Connection(self.endpoint.host, self.endpoint.port, timeout, self.context)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = self.token
        return headers

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One unary call; a stale pooled connection is replaced once."""
        payload = json.dumps(body).encode()
        for attempt in range(2):
            with self._lock:
                conn = self._pool.pop() if self._pool else None
            reused = conn is not None
            conn = conn or self.connect(self.timeout)
            try:
                resp = conn.request("POST", path, payload, self._headers())
                data = resp.read()
            except _NETWORK_ERRORS as exc:
                conn.close()
                stale = isinstance(
                    exc, (ClosedWithoutAnswer, ConnectionResetError, BrokenPipeError)
                )
                if reused and stale and attempt == 0:
                    continue  # the server closed an idle connection: once more, fresh
                raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self._give_back(conn, resp)
            if resp.status != 200:
                raise _reply_error(resp.status, data)
            try:
                reply = json.loads(data)
            except ValueError as exc:
                raise EtcdError(f"etcd gateway sent non-JSON: {data[:80]!r}") from exc
            return reply if isinstance(reply, dict) else {}
        raise EtcdUnavailable("unreachable")  # pragma: no cover - the loop returns or raises

    def _give_back(self, conn: Connection, resp: Response) -> None:
        with self._lock:
            if resp.will_close or len(self._pool) >= POOL_SIZE:
                conn.close()
            else:
                self._pool.append(conn)

    def open_stream(self, path: str, body: dict[str, Any]) -> tuple[Connection, Response]:
        """A streaming call on its own connection: (connection, response)."""
        conn = self.connect(self.timeout)
        try:
            resp = conn.request("POST", path, json.dumps(body).encode(), self._headers())
            if resp.status != 200:
                raise _reply_error(resp.status, resp.read())
        except _NETWORK_ERRORS as exc:
            conn.close()
            raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except EtcdError:
            conn.close()
            raise
        return conn, resp

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()


def read_message(resp: Response) -> dict[str, Any] | None:
    """The next ``result`` of a gateway stream, None at its end; errors become EtcdError."""
    line = resp.readline()
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise EtcdError(f"etcd gateway stream sent non-JSON: {line[:80]!r}") from exc
    if "error" in message:
        err = message["error"]
        code = err.get("grpc_code", err.get("code"))
        raise classify(code if isinstance(code, int) else None, str(err.get("message", err)))
    return message.get("result", {})


def _enable_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class HttpEtcdClient(EtcdClientBase):
    """The etcd client over the JSON gateway (see :class:`agent.etcd_base.EtcdClientBase`)."""

    transport = "http"

    def ssl_context(self) -> ssl.SSLContext:
        """Verify the server against the CA (or the system's); present our client cert."""
        import ssl  # noqa: PLC0415 - only https endpoints pay for it

        ca_file, cert_file, key_file = self._tls_files
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file and key_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def credentials(self) -> tuple[str | None, str | None]:
        return self._auth

    def _open(self, index: int) -> Gateway:
        return Gateway(self, self.endpoints[index])

    def _close_session(self, session: Any) -> None:
        session.close()

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(what, lambda gw: gw.post(path, body))

    # -- key/value ---------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None."""
        reply = self._post("get", "/v3/kv/range", {"key": b64(key)})
        kvs = reply.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` (sorted by key) and the revision of that snapshot."""
        body = {"key": b64(prefix), "range_end": prefix_end(prefix)}
        reply = self._post("get_prefix", "/v3/kv/range", body)
        return [_kv(kv) for kv in reply.get("kvs") or []], _revision(reply)

    def put(self, key: str, value: bytes | str, lease_id: int = 0) -> int:
        """Write unconditionally; returns the new revision."""
        body = {"key": b64(key), "value": b64(value), "lease": str(lease_id)}
        return _revision(self._post("put", "/v3/kv/put", body))

    def _txn(self, what: str, compare: dict[str, Any], success: dict[str, Any]) -> bool:
        body = {"compare": [compare], "success": [success], "failure": []}
        return bool(self._post(what, "/v3/kv/txn", body).get("succeeded", False))

    @staticmethod
    def _put_op(key: str, value: bytes | str, lease_id: int) -> dict[str, Any]:
        return {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease_id)}}

    def create(self, key: str, value: bytes | str, lease_id: int = 0) -> bool:
        """Put only if the key does not exist (one transaction: version == 0)."""
        compare = {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
        return self._txn("create", compare, self._put_op(key, value, lease_id))

    def replace(self, key: str, value: bytes | str, mod_revision: int, lease_id: int = 0) -> bool:
        """Put only if the key is unchanged since ``mod_revision`` (compare-and-swap)."""
        compare = {
            "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision),
        }  # fmt: skip
        return self._txn("replace", compare, self._put_op(key, value, lease_id))

    def delete(self, key: str) -> bool:
        """Delete one key; True if it existed."""
        return (
            int(self._post("delete", "/v3/kv/deleterange", {"key": b64(key)}).get("deleted", 0)) > 0
        )

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete the key only if it is unchanged since ``mod_revision``."""
        compare = {
            "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision),
        }  # fmt: skip
        return self._txn("delete", compare, {"request_delete_range": {"key": b64(key)}})

    def compact(self, revision: int) -> None:
        """Compact the history up to ``revision`` (tests and maintenance)."""
        self._post("compact", "/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # -- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (id, granted TTL in seconds)."""
        reply = self._post("lease grant", "/v3/lease/grant", {"TTL": str(int(ttl))})
        if reply.get("error"):
            raise EtcdError(f"etcd lease grant: {reply['error']}")
        return int(reply.get("ID", 0)), int(reply.get("TTL", 0))

    def lease_refresh(self, lease_id: int) -> int:
        """Keep the lease alive once; returns the new TTL. EtcdLeaseNotFound if it is gone."""

        def once(gw: Gateway) -> int:
            conn, resp = gw.open_stream("/v3/lease/keepalive", {"ID": str(lease_id)})
            try:
                message = read_message(resp) or {}
            except _NETWORK_ERRORS as exc:
                raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
            finally:
                conn.close()
            return int(message.get("TTL", 0))

        ttl = self._call("lease refresh", once)
        if ttl <= 0:
            raise EtcdLeaseNotFound(f"etcd lease {lease_id:x} not found (expired or revoked)")
        return ttl

    def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 if the lease does not exist."""
        reply = self._post("lease ttl", "/v3/lease/timetolive", {"ID": str(lease_id)})
        return int(reply.get("TTL", -1))

    def lease_revoke(self, lease_id: int) -> bool:
        """Revoke the lease (its keys are deleted); False if it did not exist."""
        try:
            self._post("lease revoke", "/v3/lease/revoke", {"ID": str(lease_id)})
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
        watch's reader thread with each batch of events, or once with an :class:`EtcdError`.
        """
        create: dict[str, Any] = {"key": b64(prefix), "range_end": prefix_end(prefix)}
        if start_revision:
            create["start_revision"] = str(start_revision)

        def start(gw: Gateway) -> tuple[Connection, Response]:
            conn, resp = gw.open_stream("/v3/watch", {"create_request": create})
            try:
                first = read_message(resp)  # "created", or the refusal of a compacted start
                if first is None:
                    raise EtcdUnavailable("watch stream closed by the server")
                _raise_if_canceled(first)
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # idle watches are normal; keep-alive probes
                    _enable_keepalive(conn.sock)
            except _NETWORK_ERRORS as exc:
                conn.close()
                raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
            except EtcdError:
                conn.close()
                raise
            return conn, resp

        conn, resp = self._call("watch", start)
        return _WatchReader(conn, resp, callback).stream

    # -- cluster -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The current endpoint's status: version, leader, db size, raft index and term."""
        st = self._post("status", "/v3/maintenance/status", {})
        return {
            "endpoint": self.current_endpoint,
            "version": str(st.get("version", "")),
            "db_size": int(st.get("dbSize", 0)),
            "leader": int(st.get("leader", 0)),
            "raft_index": int(st.get("raftIndex", 0)),
            "raft_term": int(st.get("raftTerm", 0)),
        }

    def members(self) -> list[dict[str, Any]]:
        """The cluster's members: id, name, peer and client URLs."""
        reply = self._post("member list", "/v3/cluster/member/list", {})
        return [
            {
                "id": int(m.get("ID", 0)),
                "name": str(m.get("name", "")),
                "peer_urls": list(m.get("peerURLs") or []),
                "client_urls": list(m.get("clientURLs") or []),
            }
            for m in reply.get("members") or []
        ]


def _raise_if_canceled(message: dict[str, Any]) -> None:
    if not message.get("canceled"):
        return
    compact = int(message.get("compact_revision", 0))
    if compact:
        raise EtcdCompacted(compact)
    raise EtcdError(f"watch canceled by etcd: {message.get('cancel_reason', 'no reason given')}")


class _WatchReader:
    """The reader thread of one watch: events to a stream or a callback, then one error."""

    def __init__(
        self,
        conn: Connection,
        resp: Response,
        callback: Callable[[list[WatchEvent] | EtcdError], None] | None,
    ) -> None:
        self.conn = conn
        self.resp = resp
        self.callback = callback
        self.cancelled = threading.Event()
        self.stream = WatchStream()
        self.stream._cancel = self.cancel
        threading.Thread(target=self.run, name="etcd-watch", daemon=True).start()

    def cancel(self) -> None:
        self.cancelled.set()
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed; the reader closes the rest
                sock.shutdown(socket.SHUT_RDWR)

    def deliver(self, item: list[WatchEvent] | EtcdError) -> None:
        if self.callback is None:
            self.stream._deliver(item)
            return
        try:
            self.callback(item)
        except Exception:  # the watcher's bug must not look like a broken stream
            log.exception("etcd watch callback failed")

    def run(self) -> None:
        error: EtcdError
        try:
            while True:
                message = read_message(self.resp)
                if message is None:
                    error = EtcdUnavailable("watch stream closed by the server")
                    break
                _raise_if_canceled(message)
                events = [
                    WatchEvent(
                        "delete" if e.get("type") == "DELETE" else "put", _kv(e.get("kv", {}))
                    )
                    for e in message.get("events") or []
                ]
                self.deliver(events)
        except EtcdError as exc:
            error = exc
        except Exception as exc:  # a broken or cancelled stream fails in many ways
            error = EtcdUnavailable(f"watch stream broken: {type(exc).__name__}: {exc}")
        if not self.cancelled.is_set():
            self.deliver(error)
        self.conn.close()
