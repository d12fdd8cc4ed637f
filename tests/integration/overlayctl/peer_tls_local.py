"""A real etcd 3.4 cluster of local processes for the peer-TLS rounds (etcd/peer_tls.py), and
the executor that carries the stepper's steps out on it: a member's "etcd.conf" is the stage it
starts with next, a restart is SIGTERM (as systemd stops it: a leader hands over leadership)
then a start with that stage's flags.

Members listen on their own loopback address (127.0.0.1, .2, .3: the same ports on each, as
real hosts have) with ports free on all of them for this run. Processes are stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.etcd.peer_tls import MemberView, Ports, Stage, classify
from overlayctl.pki import Pki
from overlayctl.pki.certs import Member
from tests.integration.conftest import ETCD_BIN, stop_process

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def free_on_all(count: int, addresses: tuple[str, ...]) -> list[int]:
    """COUNT TCP ports, each free on every one of ADDRESSES right now."""
    found: list[int] = []
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        if port not in found:
            found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free ports on the loopback addresses")


@dataclass
class LocalMember:
    name: str
    address: str
    workdir: Path
    file: Stage = Stage.HTTP  # what it starts with next (its etcd.conf)
    running: Stage | None = None  # what the live process was started with
    file_temp: int = 0  # the temporary port in its etcd.conf, and in what runs
    running_temp: int = 0
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class LocalCluster:
    """Members started in plain http with v2 on, as the runbook's; PORTS as they end (peer)
    and the temporary one the stepper will choose; CLIENT: every member's client port."""

    root: Path
    size: int
    ports: Ports = field(init=False)
    client: int = field(init=False)
    members: list[LocalMember] = field(default_factory=list)
    pki: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        addresses = ADDRESSES[: self.size]
        self.client, peer = free_on_all(2, addresses)
        self.ports = Ports(peer, 0)  # the temporary port: the stepper chooses it
        store = Pki(self.root, "peer-tls-test")
        store.ensure([Member(f"m{i + 1}", a) for i, a in enumerate(addresses)], [])
        self.pki = {"ca": str(store.dir / "ca.crt"), "dir": str(store.dir)}
        for i, address in enumerate(addresses):
            workdir = self.root / f"m{i + 1}"
            workdir.mkdir()
            self.members.append(LocalMember(f"m{i + 1}", address, workdir))

    # -- the processes -------------------------------------------------------------------------
    def peers(self, m: LocalMember, stage: Stage, temp: int) -> str:
        return ",".join(f"{s}://{m.address}:{p}"
                        for s, p in sorted(stage.serves(Ports(self.ports.peer, temp))))  # fmt: skip

    def client_url(self, m: LocalMember) -> str:
        return f"http://{m.address}:{self.client}"

    def argv(self, m: LocalMember) -> list[str]:
        initial = ",".join(f"{o.name}=http://{o.address}:{self.ports.peer}" for o in self.members)
        argv = [
            str(ETCD_BIN), f"--name={m.name}", f"--data-dir={m.workdir / 'data'}",
            f"--listen-client-urls={self.client_url(m)}",
            f"--advertise-client-urls={self.client_url(m)}",
            f"--listen-peer-urls={self.peers(m, m.file, m.file_temp)}",
            f"--initial-advertise-peer-urls=http://{m.address}:{self.ports.peer}",
            f"--initial-cluster={initial}", "--initial-cluster-state=new",
            "--initial-cluster-token=peer-tls-test", "--enable-v2=true", "--logger=zap",
        ]  # fmt: skip
        if m.file is not Stage.HTTP:  # what render's peers_* stages set
            pki = self.pki["dir"]
            argv += [
                f"--peer-cert-file={pki}/{m.name}-peer.crt",
                f"--peer-key-file={pki}/{m.name}-peer.key",
                f"--peer-trusted-ca-file={self.pki['ca']}", "--peer-client-cert-auth",
                f"--peer-cert-allowed-cn={hp.ETCD_PEER_CN}",
            ]  # fmt: skip
        return argv

    def start(self, m: LocalMember) -> None:
        with (m.workdir / "etcd.log").open("ab") as log:
            m.proc = subprocess.Popen(self.argv(m), stdout=log, stderr=log)
        m.running, m.running_temp = m.file, m.file_temp

    def stop(self, m: LocalMember, sig: int = signal.SIGTERM) -> None:
        proc, m.proc, m.running = m.proc, None, None
        stop_process(proc, sig, grace=15)

    def stop_all(self) -> None:
        for m in self.members:
            self.stop(m, signal.SIGKILL)

    # -- etcdctl -------------------------------------------------------------------------------
    def etcdctl(self, *args: str, api: str = "3", check: bool = True) -> str:
        endpoints = ",".join(self.client_url(m) for m in self.members)
        got = subprocess.run(
            ["etcdctl", f"--endpoints={endpoints}", *args], capture_output=True, text=True,
            timeout=30, check=False, env={**os.environ, "ETCDCTL_API": api},
        )  # fmt: skip
        if check and got.returncode != 0:
            raise OverlayctlError(f"etcdctl {' '.join(args)}: {got.stderr.strip()[-300:]}")
        return got.stdout

    def member_list(self) -> dict:
        return json.loads(self.etcdctl("member", "list", "-w", "json"))

    def unhealthy(self) -> list[str]:
        out = self.etcdctl("endpoint", "health", "-w", "json", "--command-timeout=2s",
                           check=False)  # fmt: skip
        try:
            healthy = {h.endpoint for h in etcdctl.parse_health(out) if h.healthy}
        except OverlayctlError:
            healthy = set()
        return [m.name for m in self.members if self.client_url(m) not in healthy]

    def wait_healthy(self, timeout: float = 30) -> float:
        started = time.monotonic()
        while sick := self.unhealthy():
            if time.monotonic() - started > timeout:
                raise OverlayctlError(f"etcd not healthy after {timeout:.0f} s: {sick}")
            time.sleep(0.1)
        return time.monotonic() - started


class Interrupted(Exception):
    """A cut of the run (the test's, not etcd's)."""


@dataclass
class LocalExecutor:
    """peer_tls_drive.Executor on a LocalCluster. BUDGET: steps it carries out before a cut (None:
    no cut); CUT_BEFORE_RESTART: a roll whose file it wrote is cut before the restart."""

    cluster: LocalCluster
    budget: int | None = None
    cut_before_restart: bool = False
    lines: list[str] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)  # seconds from stop to all healthy
    _started: float | None = None

    def observe(self) -> list[MemberView]:
        listed = {m.name: m for m in etcdctl.parse_members(self.cluster.etcdctl(
            "member", "list", "-w", "json"))}  # fmt: skip
        views = []
        for m in self.cluster.members:
            alive = m.proc is not None and m.proc.poll() is None
            info = listed[m.name]
            views.append(MemberView(
                id=info.id, name=m.name, address=m.address, peer_urls=tuple(info.peer_urls),
                file_peers=self.cluster.peers(m, m.file, m.file_temp),
                running_peers=self.cluster.peers(m, m.running, m.running_temp)
                if alive and m.running else None,
            ))  # fmt: skip
        return views

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.budget is not None:
            if self.budget == 0:
                raise Interrupted(line)
            self.budget -= 1

    def write(self, member: str, stage: Stage, ports: Ports) -> None:
        m = self._member(member)
        m.file, m.file_temp = stage, ports.temp
        if self.cut_before_restart:
            self.cut_before_restart = False
            raise Interrupted(f"{member}: written, not restarted")

    def restart(self, member: str) -> None:
        m = self._member(member)
        self._started = time.monotonic()
        self.cluster.stop(m)
        self.cluster.start(m)

    def wait_healthy(self, member: str) -> float:
        took = self.cluster.wait_healthy()
        if self._started is not None:
            self.restarts.append(time.monotonic() - self._started)
            self._started = None
        return took

    def rollback(self, view: MemberView, ports: Ports) -> None:
        m = self._member(view.name)
        m.file = classify(view.file_peers, ports) or Stage.HTTP
        self.cluster.stop(m)
        if view.running_peers is not None:
            self.cluster.start(m)

    def update(self, member_id: str, url: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.cluster.etcdctl("member", "update", member_id, f"--peer-urls={url}")
                return
            except OverlayctlError as exc:
                if "unhealthy cluster" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def unreachable(self, url: str, member: str) -> list[str]:
        """All members live on this machine's loopback: one connect from here tells."""
        parts = urlsplit(url)
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=3).close()
        except OSError:
            return [m.name for m in self.cluster.members if m.name != member]
        return []

    def _member(self, name: str) -> LocalMember:
        return next(m for m in self.cluster.members if m.name == name)


@dataclass
class Writer:
    """Puts a key every 200 ms through every member (v3 over the JSON gateway, the agent's
    client with failover) and records when puts failed."""

    urls: list[str]
    key: str = "/peer-tls/writer"
    results: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from agent.etcd import EtcdClient, EtcdError

        deadline = time.monotonic() + 600  # bounded in time and count
        with EtcdClient(self.urls, timeout=1.0) as cli:
            for n in range(5000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    cli.put(self.key, str(n).encode())
                    ok = True
                except EtcdError:
                    ok = False
                self.results.append((time.monotonic(), ok))
                self._stop.wait(0.2)

    def longest_outage(self) -> float:
        """Seconds from the first failed put of a run of failures to the next success."""
        worst, began = 0.0, None
        for at, ok in self.results:
            if not ok and began is None:
                began = at
            elif ok and began is not None:
                worst, began = max(worst, at - began), None
        if began is not None:
            worst = max(worst, self.results[-1][0] - began)
        return worst

    @property
    def failures(self) -> int:
        return sum(1 for _, ok in self.results if not ok)
