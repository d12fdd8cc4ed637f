"""A real etcd server on 127.0.0.1 for the agent's control-plane tests.

Each server gets free ports and a data dir under tmp_path; it is stopped by PID at teardown
(never by name). ``ETCD_BIN`` overrides the binary; without one the tests are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.etcd import EtcdClient, EtcdClientBase, EtcdError, client_class

ETCD_BIN = os.environ.get("ETCD_BIN") or (
    "/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else shutil.which("etcd")
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One single-member etcd; start/stop/restart keep the same ports and data dir."""

    def __init__(self, workdir: Path, tls: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            str(ETCD_BIN),
            "--name=t",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
            "--initial-cluster-state=new",
            "--log-level=error",
            "--logger=zap",
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ]
        if self.tls:
            cmd += [
                f"--cert-file={self.tls['server_cert']}",
                f"--key-file={self.tls['server_key']}",
                f"--trusted-ca-file={self.tls['ca']}",
                "--client-cert-auth",
            ]
        return cmd

    def start(self, timeout: float = 15.0) -> None:
        log = (self.workdir / "etcd.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited: {(self.workdir / 'etcd.log').read_text()[-2000:]}"
                )
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("etcd did not become healthy")

    def healthy(self) -> bool:
        tls = self.tls or {}
        cli = EtcdClient(
            [self.url],
            ca_file=tls.get("ca"),
            cert_file=tls.get("client_cert"),
            key_file=tls.get("client_key"),
            timeout=1.0,
        )
        try:
            cli.get("/health-probe")
            return True
        except EtcdError:
            return False
        finally:
            cli.close()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill our etcd by PID and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, transport: str = "http", **kwargs: object) -> EtcdClientBase:
        tls = self.tls or {}
        opts: dict[str, object] = {
            "ca_file": tls.get("ca"),
            "cert_file": tls.get("client_cert"),
            "key_file": tls.get("client_key"),
            "timeout": 3.0,
        }
        opts.update(kwargs)
        return client_class(transport)([self.url], **opts)  # type: ignore[arg-type]


def _require_etcd() -> None:
    if not ETCD_BIN or not os.path.exists(ETCD_BIN):
        pytest.skip("no etcd server binary (install etcd-server or set ETCD_BIN)")


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd shared by a test module (tests use their own prefix)."""
    _require_etcd()
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A private etcd for tests that kill, restart or compact it."""
    _require_etcd()
    server = EtcdServer(tmp_path / "etcd")
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> Iterator[EtcdClient]:
    """A client of the shared etcd."""
    cli = etcd_server.client()
    try:
        yield cli
    finally:
        cli.close()


@pytest.fixture
def prefix() -> str:
    """A unique flannel prefix per test."""
    return f"/test-{uuid.uuid4().hex[:10]}/network"
