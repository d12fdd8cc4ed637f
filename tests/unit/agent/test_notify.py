"""sd_notify over a real AF_UNIX datagram socket (a path and the abstract namespace)."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import Notifier, socket_address


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_status_stopping_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("subnet 10.5.3.0/24")
    assert sock.recv(4096) == b"READY=1\nSTATUS=subnet 10.5.3.0/24"
    assert notifier.status("waiting\nfor config")
    assert sock.recv(4096) == b"STATUS=waiting for config"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"overlay-agent-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.stopping() and not notifier.watchdog()


def test_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready()


def test_watchdog(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"}
    notifier = Notifier(env)
    assert notifier.watchdog_interval == 1.5
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.5
    other = Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None and not other.watchdog()
    assert Notifier({"NOTIFY_SOCKET": path}).watchdog_interval is None


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@x", "\0x"),
        ("", None),
        ("vsock:2:3", None),
    ],
)
def test_socket_address(value: str, address: str | None) -> None:
    assert socket_address(value) == address
