"""The udp backend's receive worker in ``Batching`` mode: UDP -> TUN in a process of its own.

One Python thread serving both directions was the limit: a second thread only takes turns
with it on the GIL. So with Batching the agent keeps TUN -> UDP (which needs the routes the
lease watcher updates) in its forwarding thread and starts this worker for UDP -> TUN, which
needs nothing but two file descriptors. Measured with benchmarks/dataplane.py (2 cores):
see the README's data-plane table.

The worker inherits the TUN and the socket, a shared memory block where it publishes its
counters after every round, and two pipe ends: it exits when the agent's end ("life") closes,
also when the agent was killed; the agent sees the worker gone when the worker's end
("alive") closes, and starts it again. It never logs: the agent reports for it.

    python -m agent.backends.udp_worker TUN SOCKET COUNTERS LIFE ALIVE
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from agent.backends.udp_forward import FAILED, MOVED, udp_to_tun_step

log = logging.getLogger(__name__)

COUNTERS = struct.Struct("5Q")  # PACKETS, BYTES, DROP_UNKNOWN, DROP_ERROR, REASSEMBLED
BATCH = 256  # datagrams per round before the counters are published


class RxWorker:
    """The agent's handle on the worker process: start, counters, health, stop."""

    RESTART_EVERY = 1.0  # seconds, at most, between starts after the worker died

    def __init__(self, tun: int, sock: socket.socket) -> None:
        self.tun, self.sock = tun, sock
        self.restarts = 0
        self._memfd = os.memfd_create("overlay-udp-rx", os.MFD_CLOEXEC)
        os.ftruncate(self._memfd, COUNTERS.size)
        self._shared = mmap.mmap(self._memfd, COUNTERS.size)
        self._base = [0] * 5  # what earlier workers counted
        self._proc: subprocess.Popen | None = None
        self._life = -1  # our end: the worker exits when it closes
        self.alive = -1  # poll() it: readable (hang-up) when the worker is gone
        self._started = 0.0

    def start(self) -> None:
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        fds = (self.tun, self.sock.fileno(), self._memfd, life_r, alive_w)
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agent.backends.udp_worker", *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(life_r)
            os.close(alive_w)
        self._life, self.alive, self._started = life_w, alive_r, time.monotonic()

    def counters(self) -> list[int]:
        return [a + b for a, b in zip(self._base, COUNTERS.unpack_from(self._shared))]

    def restart(self) -> bool:
        """After ``alive`` hung up: reap the worker and start another (not more often than
        RESTART_EVERY). False when it is too early; call again later."""
        if time.monotonic() - self._started < self.RESTART_EVERY:
            return False
        code = self._reap()
        log.warning("udp: the receive worker exited (%s); starting it again", code)
        self.restarts += 1
        self.start()
        return True

    def _reap(self) -> int | None:
        """Close our ends, let the worker go (SIGTERM after 5 s), keep its counts."""
        code = None
        for fd in (self._life, self.alive):
            if fd >= 0:
                os.close(fd)
        self._life = self.alive = -1
        if self._proc is not None:
            try:
                code = self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                code = self._proc.wait(5)
            self._proc = None
        self._base = self.counters()
        COUNTERS.pack_into(self._shared, 0, 0, 0, 0, 0, 0)
        return code

    def stop(self) -> None:
        self._reap()

    def close(self) -> None:
        self._reap()
        self._shared.close()
        os.close(self._memfd)


def run(tun: int, sock: socket.socket, shared: mmap.mmap, life: int) -> None:
    """UDP -> TUN until LIFE hangs up: drain the socket (BATCH at a time), publish the
    counters, sleep in poll()."""
    counters = [0] * 5
    step = udp_to_tun_step(tun, sock, counters)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(life, select.POLLIN)
    poll, publish = poller.poll, COUNTERS.pack_into
    while True:
        for fd, _events in poll(1000):
            if fd == life:
                return
            for _ in range(BATCH):
                moved = step()
                if moved != MOVED:
                    break
            if moved == FAILED:
                time.sleep(0.1)
        publish(shared, 0, *counters)


def main(argv: list[str]) -> int:
    tun, sock_fd, memfd, life, alive = map(int, argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C on the agent's terminal: the agent stops us
    del alive  # held open until we exit: the agent's hang-up signal
    sock = socket.socket(fileno=sock_fd)
    with contextlib.closing(mmap.mmap(memfd, COUNTERS.size)) as shared:
        run(tun, sock, shared, life)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
