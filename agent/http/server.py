"""The agent's small HTTP server: ``/healthz``, ``/readyz`` and ``/metrics`` (plain sockets).

The server knows nothing about the agent: it asks three callables for the answers.
``/readyz`` answers 503 with a JSON reason until the agent is ready, then 200.
``/metrics`` is Prometheus' text exposition format (version 0.0.4).
Port 0 means no server at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.http.wire import read_head

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


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip
MAX_CLIENTS = 16  # concurrent connections; more are closed at once
CLIENT_TIMEOUT_S = 5.0


class HealthServer:
    """Serves the three endpoints (GET and HEAD, one request per connection) from a daemon
    thread; :meth:`stop` closes the socket. Each connection gets its own short-lived thread,
    at most MAX_CLIENTS at a time, and CLIENT_TIMEOUT_S to send its request."""

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
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

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
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), name="http", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed by stop()
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: a health probe will retry
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="http-client", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CLIENT_TIMEOUT_S)
            with conn, conn.makefile("rb") as reader:
                head = read_head(reader)
                if head is None:
                    return
                method, _, rest = head[0].partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0].rstrip("/") or "/"
                code, ctype, body = self._answer(method, path)
                data = body.encode("utf-8")
                lines = [
                    f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}", "Server: overlay-agent",
                    f"Content-Type: {ctype}", f"Content-Length: {len(data)}", "Connection: close",
                ]  # fmt: skip
                reply = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                conn.sendall(reply if method == "HEAD" else reply + data)
        except OSError as exc:
            log.debug("http client: %s", exc)
        finally:
            self._slots.release()

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
