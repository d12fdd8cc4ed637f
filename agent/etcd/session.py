"""The wire side of the JSON-gateway transport (agent/etcd/gateway.py): etcd's JSON encodings, one
endpoint's connection pool and auth token, the error replies, and the reader of a watch stream.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from agent.etcd.base import auth_is_off, classify
from agent.etcd.types import (
    Endpoint,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    WatchEvent,
    WatchStream,
)
from agent.http.wire import ClosedWithoutAnswer, Connection, Response

log = logging.getLogger(__name__)

POOL_SIZE = 4
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
# A pooled connection the server closed while idle fails like this: send again, once, fresh.
_STALE = (ClosedWithoutAnswer, ConnectionResetError, BrokenPipeError)
_NETWORK_ERRORS = (OSError,)  # socket, TLS and protocol errors (agent.http.wire.HttpError)


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


def decode_kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(raw.get("key")).decode("utf-8", "replace"),
        value=unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease_id=int(raw.get("lease", 0)),
    )


def revision_of(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def reply_error(status: int, body: bytes) -> EtcdError:
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


@contextlib.contextmanager
def closed_on_error(conn: Connection) -> Iterator[None]:
    """Close CONN if the block fails; socket, TLS and protocol errors become EtcdUnavailable."""
    try:
        yield
    except _NETWORK_ERRORS as exc:
        conn.close()
        raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except EtcdError:
        conn.close()
        raise


class Gateway:
    """One endpoint: TLS context, auth token and a pool of keep-alive connections."""

    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float,
        context: Any = None,
        credentials: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = context  # an ssl.SSLContext for https endpoints
        self._pool: list[Connection] = []
        self._lock = threading.Lock()
        self.token = ""
        user, password = credentials
        if user:
            try:
                reply = self.post("/v3/auth/authenticate", {"name": user, "password": password})
            except EtcdError as exc:
                if not auth_is_off(exc):
                    raise
                log.debug("etcd %s: authentication is off; calling without a token", endpoint.url)
                reply = {}
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
                if reused and isinstance(exc, _STALE) and attempt == 0:
                    continue  # the server closed an idle connection: once more, fresh
                raise EtcdUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self._give_back(conn, resp)
            if resp.status != 200:
                raise reply_error(resp.status, data)
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
        with closed_on_error(conn):
            resp = conn.request("POST", path, json.dumps(body).encode(), self._headers())
            if resp.status != 200:
                raise reply_error(resp.status, resp.read())
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


def enable_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def raise_if_canceled(message: dict[str, Any]) -> None:
    if not message.get("canceled"):
        return
    compact = int(message.get("compact_revision", 0))
    if compact:
        raise EtcdCompacted(compact)
    raise EtcdError(f"watch canceled by etcd: {message.get('cancel_reason', 'no reason given')}")


class WatchReader:
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
                raise_if_canceled(message)
                events = [
                    WatchEvent(
                        "delete" if e.get("type") == "DELETE" else "put", decode_kv(e.get("kv", {}))
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
