"""A real etcd server on 127.0.0.1 for the agent's control-plane tests.

Each server gets free ports and a data dir under tmp_path; it is stopped by PID at teardown
(never by name). ``ETCD_BIN`` overrides the binary; without one the tests are skipped.

:class:`LoopbackRelay` joins 127.0.0.1 of the machine and 127.0.0.1 of a light lab host, so an
agent inside a host reaches that etcd and the test reads the agent's /healthz: loopback only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
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


def stop_process(
    proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 10
) -> None:
    """Send SIG to PROC (ours, by PID) unless it has exited, reap it within GRACE seconds, and
    SIGKILL it if it has not gone by then."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


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
        stop_process(proc, sig)

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


def pki_tls(folder: Path, hosts: list[str] | None = None) -> tuple[Path, dict[str, str]]:
    """A cluster PKI under FOLDER (overlayctl.pki) for one member "t" on 127.0.0.1, with HOSTS'
    identities: its folder, and EtcdServer's TLS files (the member's server certificate, the CA,
    the admin's certificate as the client's)."""
    from overlayctl.pki import Member, Pki

    pki = Pki(folder, "t")
    pki.ensure([Member("t", "127.0.0.1")], hosts or [])
    files = pki.dir
    return files, {
        "server_cert": str(files / "t-server.crt"),
        "server_key": str(files / "t-server.key"),
        "ca": str(files / "ca.crt"),
        "client_cert": str(files / "admin.crt"),
        "client_key": str(files / "admin.key"),
    }


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


# -- loopback relays into light lab hosts ---------------------------------------------------------

_CLONE_NEWNET = 0x40000000


def netns_socket(netns: str | None) -> socket.socket:
    """A new TCP socket in network namespace NETNS (None: the test's own).

    A socket stays in the namespace it was made in, so a short-lived thread enters NETNS
    (setns changes only the calling thread) and makes it; the test process stays where it is.
    """
    if netns is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=make, name=f"netns-socket-{netns}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class LoopbackRelay:
    """Relays each TCP connection to 127.0.0.1:LISTEN_PORT in LISTEN_NS on to
    127.0.0.1:TARGET_PORT in CONNECT_NS (None: the test's namespace; LISTEN_PORT 0: a free one,
    see ``port``). Both ends are loopback: nothing leaves either namespace. A refused target
    closes the relayed connection, as a refused connection would."""

    def __init__(
        self,
        target_port: int,
        *,
        listen_ns: str | None = None,
        connect_ns: str | None = None,
        listen_port: int = 0,
    ) -> None:
        self.target_port = target_port
        self.connect_ns = connect_ns
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.listener = netns_socket(listen_ns)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = netns_socket(self.connect_ns)
            try:
                upstream.connect(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            running = [2]  # pumps of this connection still running
            for src, dst in ((client, upstream), (upstream, client)):
                args = (src, dst, running)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, running: list[int]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # half-close, as the sender did
        except OSError:  # one side is gone: so is the connection
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            with self._lock:
                running[0] -= 1
                if running[0] == 0 and src in self._open:
                    for sock in (src, dst):
                        self._open.discard(sock)
                        sock.close()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection."""
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()
