"""The agent's small HTTP server: ``/healthz``, ``/readyz`` and ``/metrics`` (plain sockets).

The server knows nothing about the agent: it asks three callables for the answers.
``/readyz`` answers 503 with a JSON reason until the agent is ready, then 200.
``/metrics`` is Prometheus' text exposition format (version 0.0.4).
Port 0 means no server at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.http.wire import HttpError, read_head

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Metric:
    """One sample; samples of the same name share HELP and TYPE."""

    name: str
    value: float
    help: str = ""
    kind: str = "gauge"  # "gauge" or "counter"
    labels: Mapping[str, str] = field(default_factory=dict)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def format_metrics(metrics: Iterable[Metric]) -> str:
    """Prometheus text format: samples grouped by name, HELP and TYPE once per name."""
    groups: dict[str, list[Metric]] = {}
    for metric in metrics:
        groups.setdefault(metric.name, []).append(metric)
    lines: list[str] = []
    for name, samples in groups.items():
        first = samples[0]
        if first.help:
            help_text = first.help.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {first.kind}")
        for sample in samples:
            labels = ""
            if sample.labels:
                pairs = ",".join(
                    f'{k}="{_escape_label(str(v))}"' for k, v in sorted(sample.labels.items())
                )
                labels = "{" + pairs + "}"
            lines.append(f"{name}{labels} {_format_value(sample.value)}")
    return "\n".join(lines) + "\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
MAX_CLIENTS = 64  # connections at once; a new one beyond this closes the oldest unfinished one
REQUEST_DEADLINE_S = 2.0  # for a whole connection (request and answer), not per read
MAX_REQUEST = 16 * 1024  # a request head longer than this is closed unanswered


class _Client:
    """One connection's state: what it sent so far, the answer left to send, its deadline."""

    __slots__ = ("conn", "deadline", "received", "reply")

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.received = b""
        self.reply: memoryview | None = None


_Clients = dict[socket.socket, _Client]


def _head_complete(data: bytes) -> bool:
    return b"\n\r\n" in data or b"\n\n" in data


class HealthServer:
    """Serves the three endpoints (GET and HEAD, one request per connection) from one daemon
    thread with non-blocking sockets (selectors), so no client can hold up another.

    Local clients that connect and then send slowly (or never) cannot starve /readyz (issue 17,
    item 9): each connection has REQUEST_DEADLINE_S in all, however it trickles its bytes, and
    at most MAX_CLIENTS are kept; one more closes the oldest unfinished connection instead of
    being refused, so a prober's request, which arrives whole at once, is answered on the next
    turn of the loop. The answers are small and computed in microseconds, so serving them in
    the loop thread costs less than a thread per connection did."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        metrics: Callable[[], Iterable[Metric]],
    ) -> None:
        self.host = host
        self.port = port
        self._health, self._ready, self._metrics = health, ready, metrics
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self.evicted = 0  # connections closed to make room or at their deadline

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port), or None when not serving."""
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve (OSError if the address is taken); nothing when port is 0."""
        if self.port == 0 or self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, args=(sock,), name="http", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        sock.close()
        for end in self._wake or ():
            end.close()
        self._wake = None

    def _loop(self, sock: socket.socket) -> None:
        clients: _Clients = {}  # in accept order: the first is the oldest
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ, "accept")
            if self._wake is not None:
                sel.register(self._wake[0], selectors.EVENT_READ, "stop")
            try:
                while True:
                    now = time.monotonic()
                    first = next(iter(clients.values()), None)
                    wait = max(first.deadline - now, 0.0) if first is not None else None
                    for key, mask in sel.select(wait):
                        if key.data == "stop":
                            return
                        if key.data == "accept":
                            self._accept(sock, sel, clients)
                        else:
                            self._step(key.data, mask, sel, clients)
                    now = time.monotonic()
                    for client in [c for c in clients.values() if c.deadline <= now]:
                        self.evicted += 1
                        self._close(client, sel, clients)
            finally:
                for client in list(clients.values()):
                    self._close(client, sel, clients)

    def _accept(self, sock: socket.socket, sel: selectors.BaseSelector, clients: _Clients) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: the next turn retries
                log.debug("http accept: %s", exc)
                return
            if len(clients) >= MAX_CLIENTS:
                self.evicted += 1
                self._close(next(iter(clients.values())), sel, clients)
            conn.setblocking(False)
            client = _Client(conn, time.monotonic() + REQUEST_DEADLINE_S)
            clients[conn] = client
            sel.register(conn, selectors.EVENT_READ, client)

    def _close(self, client: _Client, sel: selectors.BaseSelector, clients: _Clients) -> None:
        clients.pop(client.conn, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(client.conn)
        client.conn.close()

    def _step(
        self, client: _Client, mask: int, sel: selectors.BaseSelector, clients: _Clients
    ) -> None:
        """Read what CLIENT sent, or send it more of its answer; close it when done or wrong."""
        try:
            if client.reply is None and mask & selectors.EVENT_READ:
                data = client.conn.recv(MAX_REQUEST)
                client.received += data
                if not data or len(client.received) > MAX_REQUEST:
                    self._close(client, sel, clients)
                    return
                if not _head_complete(client.received):
                    return
                client.reply = memoryview(self._reply(client.received))
                sel.modify(client.conn, selectors.EVENT_WRITE, client)
            if client.reply is not None:
                client.reply = client.reply[client.conn.send(client.reply) :]
                if not client.reply:
                    self._close(client, sel, clients)
        except (BlockingIOError, InterruptedError):
            return  # not writable after all: the selector says when
        except OSError as exc:
            log.debug("http client: %s", exc)
            self._close(client, sel, clients)

    def _reply(self, request: bytes) -> bytes:
        """The whole HTTP answer to a complete request head (400 if it is not one)."""
        try:
            head = read_head(io.BufferedReader(io.BytesIO(request)))
        except HttpError:
            head = None
        if head is None:
            code, ctype, body, method = 400, "text/plain; charset=utf-8", "bad request\n", "GET"
        else:
            method, _, rest = head[0].partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0].rstrip("/") or "/"
            code, ctype, body = self._answer(method, path)
        data = body.encode("utf-8")
        lines = [
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}", "Server: overlay-agent",
            f"Content-Type: {ctype}", f"Content-Length: {len(data)}", "Connection: close",
        ]  # fmt: skip
        reply = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return reply if method == "HEAD" else reply + data

    def _answer(self, method: str, path: str) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, "method not allowed\n"
        try:
            if path == "/healthz":
                ok, body = self._health()
                return (200 if ok else 503), text, body + "\n"
            if path == "/readyz":
                ok, reason = self._ready()
                return (200 if ok else 503), "application/json", json.dumps(reason) + "\n"
            if path == "/metrics":
                return 200, METRICS_CONTENT_TYPE, format_metrics(self._metrics())
        except Exception:
            log.exception("http %s failed", path)
            return 500, text, "internal error\n"
        return 404, text, "not found\n"
