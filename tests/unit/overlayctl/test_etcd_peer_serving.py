"""etcd_peer_serving.py (a new cluster's members start one after another): it returns as soon as
the peer URL's /version answers 200, keeps asking while the port refuses or answers otherwise,
and gives up after its SECONDS with the last reason. Run as on a host (`python3 -c`), against
servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import command_of

SCRIPT = HostScript("etcd_peer_serving.py")


class Answers(http.server.BaseHTTPRequestHandler):
    ready_at = 0.0  # monotonic time from which /version answers 200 (503 before)

    def do_GET(self) -> None:
        ok = self.path == "/version" and time.monotonic() >= self.ready_at
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def run(url: str, seconds: float) -> tuple[subprocess.CompletedProcess[str], float]:
    argv, _ = command_of(SCRIPT, url, str(seconds))
    began = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 20, check=False)
    return done, time.monotonic() - began


def test_it_returns_once_the_member_serves(server: http.server.HTTPServer) -> None:
    Answers.ready_at = time.monotonic() + 0.5
    done, took = run(f"http://127.0.0.1:{server.server_port}", 10)
    assert done.returncode == 0, done.stdout
    assert 0.4 <= took < 5


def test_it_gives_up_after_its_seconds_with_the_last_reason(
    server: http.server.HTTPServer,
) -> None:
    Answers.ready_at = time.monotonic() + 3600
    done, took = run(f"http://127.0.0.1:{server.server_port}", 1)
    assert done.returncode == 1 and done.stdout.strip() == "HTTP 503"
    assert took < 5


def test_a_closed_port_is_asked_again_until_the_time_is_up() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done, took = run(f"http://127.0.0.1:{port}", 0.5)
    assert done.returncode == 1 and "refused" in done.stdout.lower()
    assert took < 5
