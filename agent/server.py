"""The agent's small HTTP server: ``/healthz``, ``/readyz`` and ``/metrics`` (stdlib only).

The server knows nothing about the agent: it asks three callables for the answers.
``/readyz`` answers 503 with a JSON reason until the agent is ready, then 200.
``/metrics`` is Prometheus' text exposition format (version 0.0.4).
Port 0 means no server at all.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "overlay-agent"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/healthz":
                ok, body = self.server.agent_health()
                self._send(200 if ok else 503, "text/plain; charset=utf-8", body + "\n")
            elif path == "/readyz":
                ok, reason = self.server.agent_ready()
                self._send(200 if ok else 503, "application/json", json.dumps(reason) + "\n")
            elif path == "/metrics":
                text = format_metrics(self.server.agent_metrics())
                self._send(200, METRICS_CONTENT_TYPE, text)
            else:
                self._send(404, "text/plain; charset=utf-8", "not found\n")
        except Exception:
            log.exception("http %s failed", path)
            self._send(500, "text/plain; charset=utf-8", "internal error\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, code: int, ctype: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    agent_health: Callable[[], tuple[bool, str]]
    agent_ready: Callable[[], tuple[bool, dict[str, Any]]]
    agent_metrics: Callable[[], Iterable[Metric]]


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves the three endpoints in a daemon thread; :meth:`stop` closes the socket."""

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
        self._callbacks = (health, ready, metrics)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port), or None when not serving."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve (OSError if the address is taken); nothing when port is 0."""
        if self.port == 0 or self._server is not None:
            return
        cls = _Server6 if ":" in self.host else _Server
        server = cls((self.host, self.port), _Handler)
        server.agent_health, server.agent_ready, server.agent_metrics = self._callbacks
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
