"""/healthz, /readyz and /metrics: the text format and the readiness transitions.

The agent is driven by hand (no etcd): a fake Backend, a stand-in lease manager and watcher.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.daemon import Agent
from agent.http.server import REQUEST_DEADLINE_S, HealthServer, Metric, format_metrics
from agent.notify import Notifier
from agent.options import AgentOptions
from agent.subnet.choice import Conflict
from agent.subnet.config import parse_config
from agent.subnet.layout import Lease

CONFIG = parse_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}')
IFACE = ExternalInterface("eth0", 2, IPv4Address("10.0.0.5"), IPv4Address("10.0.0.5"), 1500)


class FakeBackend(Backend):
    type_name = "udp"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.setups: list[IPv4Network] = []
        self.fail = False

    @property
    def mtu(self) -> int:
        return 1472

    def setup(self, own: Lease) -> None:
        if self.fail:
            raise BackendError("cannot create flannel0")
        self.setups.append(own.subnet)

    def teardown(self) -> None:
        self.setups.clear()

    def add_peer(self, lease: Lease) -> None:
        pass

    def remove_peer(self, lease: Lease) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {"routes_programmed": 2, "rx packets_total": 10, "drops_total": 1}


def lease(third: int, lease_id: int = 7) -> Lease:
    subnet = IPv4Network(f"10.5.{third}.0/24")
    return Lease(subnet, IFACE.public_ip, "udp", None, lease_id, 1, f"/p/subnets/10.5.{third}.0-24")


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    opts = AgentOptions(
        subnet_file=tmp_path / "subnet.env",
        docker_opts_file=tmp_path / "docker",
        healthz_port=0,
    )
    made = Agent(opts, notifier=Notifier({}))
    made.client = SimpleNamespace(errors=3)  # type: ignore[assignment]
    made.config = CONFIG
    made.backend = FakeBackend(CONFIG, IFACE)
    made.leases = SimpleNamespace(  # type: ignore[assignment]
        current=None, expires_at=None, conflicts=[], poke=lambda: None
    )
    made.watcher = SimpleNamespace(  # type: ignore[assignment]
        peers={"a": 1, "b": 2},
        stats={"relists": 3, "events": 5, "errors": 1, "compactions": 1},
        refused=[],
        allowlist=None,
    )
    return made


def test_format_metrics_groups_and_escapes() -> None:
    text = format_metrics(
        [
            Metric("x_total", 3, "Things.\nDone.", "counter", {"kind": 'a"b\\c'}),
            Metric("x_total", 1.5, labels={"kind": "z"}, kind="counter"),
            Metric("y", float("inf"), "Y."),
            Metric("z", True),
        ]
    )
    assert text == (
        "# HELP x_total Things.\\nDone.\n"
        "# TYPE x_total counter\n"
        'x_total{kind="a\\"b\\\\c"} 3\n'
        'x_total{kind="z"} 1.5\n'
        "# HELP y Y.\n"
        "# TYPE y gauge\n"
        "y +Inf\n"
        "# TYPE z gauge\n"
        "z 1\n"
    )


def test_readyz_transitions(agent: Agent, tmp_path: Path) -> None:
    ok, reason = agent.ready()
    assert not ok and reason["waiting_for"] == ["lease", "dataplane", "subnet_file"]
    agent.backend.fail = True  # type: ignore[union-attr]
    assert agent.apply_lease(lease(3)) is False  # the first setup failing is fatal
    ok, reason = agent.ready()
    assert not ok and reason["waiting_for"] == ["dataplane", "subnet_file"]
    agent.backend.fail = False  # type: ignore[union-attr]
    assert agent.apply_lease(lease(3))
    ok, reason = agent.ready()
    assert ok and reason == {"ready": True, "phase": "ready", "waiting_for": [], "subnet": None,
                             "detail": "subnet 10.5.3.0/24"}  # fmt: skip
    assert (tmp_path / "subnet.env").read_text().startswith("FLANNEL_NETWORK=10.5.0.0/16\n")
    # Lease lost: not ready, data plane kept; re-acquired with the same subnet: no new setup.
    assert agent.apply_lease(None)
    assert agent.ready()[1]["waiting_for"] == ["lease"]
    assert agent.apply_lease(lease(3, lease_id=8))
    assert agent.is_ready() and agent.backend.setups == [IPv4Network("10.5.3.0/24")]  # type: ignore[union-attr]
    # Another subnet (rare): set up again and files rewritten.
    assert agent.apply_lease(lease(9))
    assert agent.backend.setups[-1] == IPv4Network("10.5.9.0/24")  # type: ignore[union-attr]
    assert "FLANNEL_SUBNET=10.5.9.1/24" in (tmp_path / "subnet.env").read_text()
    assert "--bip=10.5.9.1/24" in (tmp_path / "docker").read_text()


def test_later_setup_failure_is_not_fatal(agent: Agent) -> None:
    assert agent.apply_lease(lease(3))
    agent.backend.fail = True  # type: ignore[union-attr]
    assert agent.apply_lease(lease(4)) is True
    assert not agent.is_ready() and agent.ready()[1]["waiting_for"] == ["dataplane"]


def test_metrics_content(agent: Agent) -> None:
    agent.apply_lease(lease(3))
    agent.leases.current = lease(3)  # type: ignore[union-attr]
    agent.leases.expires_at = 4_000_000_000.0  # type: ignore[union-attr]
    agent.leases.conflicts = [Conflict("duplicate-public-ip", "x")]  # type: ignore[union-attr]
    text = format_metrics(agent.metrics())
    samples = dict(re.findall(r"^(\S+) (\S+)$", text, re.M))
    assert samples["overlay_agent_ready"] == "1"
    assert samples["overlay_agent_lease_expiry_timestamp_seconds"] == "4000000000"
    assert float(samples["overlay_agent_lease_seconds_left"]) > 0
    assert samples["overlay_agent_peers"] == "2"
    assert samples["overlay_agent_routes_programmed"] == "2"
    assert samples["overlay_agent_etcd_errors_total"] == "4"  # client 3 + watch 1
    assert samples["overlay_agent_watch_resyncs_total"] == "3"
    assert samples['overlay_agent_lease_conflicts{kind="duplicate-public-ip"}'] == "1"
    assert samples['overlay_agent_lease_conflicts{kind="overlapping-subnets"}'] == "0"
    assert samples["overlay_agent_backend_rx_packets_total"] == "10"
    assert "# TYPE overlay_agent_backend_drops_total counter" in text
    assert 'overlay_agent_info{backend="udp",version=' in text
    for line in text.splitlines():  # every line is a comment or `name{labels} value`
        assert line.startswith("# ") or re.fullmatch(r"[a-z_]+(\{.*\})? \S+", line), line


def test_refused_leases_in_metrics_and_readyz(agent: Agent) -> None:
    outside = Lease(IPv4Network("10.5.200.0/24"), IPv4Address("192.168.255.10"), "udp")
    agent.watcher.refused = [outside]  # type: ignore[union-attr]
    samples = dict(re.findall(r"^(\S+) (\S+)$", format_metrics(agent.metrics()), re.M))
    assert samples["overlay_agent_leases_refused"] == "1"
    assert agent.ready()[1]["refused"] == [
        {"subnet": "10.5.200.0/24", "public_ip": "192.168.255.10"}
    ]


@pytest.fixture
def served(agent: Agent) -> Iterator[tuple[Agent, int]]:
    server = HealthServer(
        "127.0.0.1", 0, health=agent.health, ready=agent.ready, metrics=agent.metrics
    )
    server.port = _free_port()
    server.start()
    try:
        assert server.address is not None
        yield agent, server.address[1]
    finally:
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_http_endpoints(served: tuple[Agent, int]) -> None:
    agent, port = served
    assert _get(port, "/healthz")[:2] == (200, "text/plain; charset=utf-8")
    code, ctype, body = _get(port, "/readyz")
    assert (code, ctype) == (503, "application/json")
    assert json.loads(body)["waiting_for"] == ["lease", "dataplane", "subnet_file"]
    agent.apply_lease(lease(3))
    assert _get(port, "/readyz")[0] == 200
    code, ctype, body = _get(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "overlay_agent_ready 1\n" in body
    assert _get(port, "/nope")[0] == 404
    agent.phase = "stopping"
    assert _get(port, "/healthz")[0] == 503


def test_port_zero_serves_nothing(agent: Agent) -> None:
    server = HealthServer("127.0.0.1", 0, health=agent.health, ready=agent.ready,
                          metrics=agent.metrics)  # fmt: skip
    server.start()
    assert server.address is None
    server.stop()


def test_idle_clients_do_not_block_answers_and_other_methods_are_refused(
    served: tuple[Agent, int],
) -> None:
    import socket

    _, port = served
    idle = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(3)]
    try:
        assert _get(port, "/healthz")[0] == 200  # while three clients send nothing
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 405 ")
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("slow", [16, 100])
def test_slow_clients_cannot_starve_readyz(served: tuple[Agent, int], slow: int) -> None:
    """Issue 17 item 9: SLOW local clients each send half a request head and stall; a
    prober's /readyz is still answered at once."""
    import socket

    _, port = served
    stalled = []
    try:
        for _ in range(slow):
            conn = socket.create_connection(("127.0.0.1", port), timeout=3)
            conn.sendall(b"GET /readyz HTTP/1.1\r\n")  # and never the blank line
            stalled.append(conn)
        for _ in range(3):
            started = time.monotonic()
            assert _get(port, "/readyz")[0] == 503  # answered (not ready yet), not refused
            assert time.monotonic() - started < 1.0
    finally:
        for conn in stalled:
            conn.close()


def test_the_deadline_is_per_request_not_per_read(served: tuple[Agent, int]) -> None:
    """A client that trickles its head a byte at a time (each read well within any per-read
    timeout) is closed once REQUEST_DEADLINE_S is over."""
    import socket

    _, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        started = time.monotonic()
        closed_at = None
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"y" * 60:
            try:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
                conn.setblocking(False)
                if conn.recv(1) == b"":
                    closed_at = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_at = time.monotonic() - started
                break
            finally:
                conn.setblocking(True)
    assert closed_at is not None and REQUEST_DEADLINE_S - 0.3 <= closed_at <= REQUEST_DEADLINE_S + 1
