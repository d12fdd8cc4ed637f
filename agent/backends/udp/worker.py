"""The udp backend's forwarding in ``Batching`` mode: the agent's thread and a receive worker.

One Python thread serving both directions is the limit under load: a second thread only
takes turns with it on the GIL. So the agent's forwarding thread (``forward``) moves TUN ->
UDP, and UDP -> TUN too while traffic is light; once receiving keeps it busy (BUSY of a
WINDOW), it hands UDP -> TUN to a worker process (``python -m agent.backends.udp.worker``),
which hands it back when it has been nearly idle for a while. Light traffic (a ping, a
request and its answer) stays in one thread and costs no extra wake-up; a bulk transfer gets
both cores. Only one of them reads the socket at any time (the hand-over is a message each
way over a pipe), so packets are never reordered.

The worker inherits the TUN and the socket, a shared memory block where it publishes its
counters after every round, and two pipes: "control" (agent -> worker: READ) whose hang-up
makes the worker exit, also when the agent was killed; "alive" (worker -> agent: RETURNED)
whose hang-up tells the agent that the worker is gone: the agent reads the socket again
and starts another worker. The worker never logs: the agent reports for it.

    python -m agent.backends.udp.worker TUN SOCKET COUNTERS CONTROL ALIVE
"""

from __future__ import annotations

import contextlib
import gc
import logging
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.backends.udp.forward import BATCH, FAILED, MOVED, udp_to_tun_step

log = logging.getLogger(__name__)

COUNTERS = struct.Struct("5Q")  # PACKETS, BYTES, DROP_UNKNOWN, DROP_ERROR, REASSEMBLED
READ, RETURNED = b"R", b"S"  # the hand-over messages
WINDOW = 0.1  # seconds over which the agent's thread measures how busy it is
BUSY = 0.5  # busier than this (fraction of WINDOW) with receiving on: hand it to the worker
IDLE = 0.1  # the worker, less busy than this for IDLE_WINDOWS in a row: hand it back
IDLE_WINDOWS = 5


def drain(step: Callable[[], int], stop: threading.Event | None = None) -> None:
    """Run STEP until its source is empty (at most BATCH times); back off if it fails."""
    moved = MOVED
    for _ in range(BATCH):
        moved = step()
        if moved != MOVED:
            break
    if moved == FAILED:  # the device or socket is failing: do not spin
        if stop is None:
            time.sleep(0.1)
        else:
            stop.wait(0.1)


class RxWorker:
    """The agent's handle on the worker process: start, hand over, counters, stop."""

    RESTART_EVERY = 1.0  # seconds from a start to the next one, after the worker died...
    RESTART_AT_MOST = 60.0  # ...doubling for every start within LIVED of the one before
    LIVED = 10.0  # starts further apart begin again at RESTART_EVERY

    def __init__(self, tun: int, sock: socket.socket) -> None:
        self.tun, self.sock = tun, sock
        self.restarts = 0
        self.handovers = 0
        self.reading = False  # the worker has the socket (set by ``forward``)
        self._memfd = os.memfd_create("overlay-udp-rx", os.MFD_CLOEXEC)
        os.ftruncate(self._memfd, COUNTERS.size)
        self._shared = mmap.mmap(self._memfd, COUNTERS.size)
        self._base = [0] * 5  # what earlier workers counted
        self._proc: subprocess.Popen | None = None
        self._control = -1  # our end: READ goes here; the worker exits when it closes
        self.alive = -1  # poll() it: RETURNED, or a hang-up when the worker is gone
        self._started = 0.0
        self._delay = self.RESTART_EVERY
        self._lock = threading.Lock()  # counters() runs in other threads than _reap()

    def start(self) -> bool:
        """Start a worker (it waits for READ). False, logged, if it cannot be started:
        receiving then stays in the forwarding thread, and ``due`` says when to try again."""
        now = time.monotonic()
        quick = now - self._started < self.LIVED
        self._delay = min(self._delay * 2, self.RESTART_AT_MOST) if quick else self.RESTART_EVERY
        self._started = now
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        fds = (self.tun, self.sock.fileno(), self._memfd, control_r, alive_w)
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agent.backends.udp.worker", *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except Exception as exc:  # whatever it is, forwarding goes on without a worker
            log.warning("udp: cannot start the receive worker (%s): one thread receives", exc)
            for fd in (control_w, alive_r):
                os.close(fd)
            return False
        finally:
            os.close(control_r)
            os.close(alive_w)
        self._control, self.alive = control_w, alive_r
        return True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def due(self, now: float) -> bool:
        """No worker running, and the last start long enough ago: RESTART_EVERY, doubled
        for every start within LIVED seconds of the one before (up to RESTART_AT_MOST)."""
        return self.alive < 0 and now >= self._started + self._delay

    def restart(self) -> bool:
        self.restarts += 1
        return self.start()

    def lost(self) -> None:
        """``alive`` hung up: the worker is gone. Reap it (``due`` tells when to restart)."""
        code = self._reap()
        log.warning("udp: the receive worker exited (%s); it will be started again", code)

    def hand_over(self) -> bool:
        """Ask the worker to read the socket from now on (the caller stopped reading it)."""
        if self._control < 0:
            return False
        try:
            os.write(self._control, READ)
        except OSError:
            return False
        self.handovers += 1
        return True

    def message(self) -> bytes:
        """What the worker said on ``alive``: RETURNED (the socket is ours again) or b""
        (it is gone)."""
        try:
            return os.read(self.alive, 1)
        except OSError:
            return b""

    def counters(self) -> list[int]:
        with self._lock:
            if self._shared.closed:
                return list(self._base)
            return [a + b for a, b in zip(self._base, COUNTERS.unpack_from(self._shared))]

    def _reap(self) -> int | None:
        """Close our ends, let the worker go (SIGTERM after 5 s), keep its counts."""
        code = None
        for fd in (self._control, self.alive):
            if fd >= 0:
                os.close(fd)
        self._control = self.alive = -1
        self.reading = False
        if self._proc is not None:
            code = _end(self._proc)
            self._proc = None
        with self._lock:
            if not self._shared.closed:
                self._base = [a + b for a, b in zip(self._base, COUNTERS.unpack_from(self._shared))]
                COUNTERS.pack_into(self._shared, 0, 0, 0, 0, 0, 0)
        return code

    def stop(self) -> None:
        self._reap()

    def close(self) -> None:
        self._reap()
        with self._lock:
            self._shared.close()
        os.close(self._memfd)


def _end(proc: subprocess.Popen) -> int | None:
    """Wait for PROC (told to go by its control pipe): SIGTERM after 5 s, SIGKILL after 10."""
    for ask in (None, proc.terminate, proc.kill):
        if ask is not None:
            ask()
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            continue
    return None


class _Reader:
    """Who reads the socket: the forwarding thread (``ours``) or the worker; the thread's
    poll() set follows it."""

    def __init__(self, poller: select.poll, sock_fd: int, worker: RxWorker) -> None:
        self.poller, self.sock_fd, self.worker = poller, sock_fd, worker
        self.ours = True

    def take_back(self) -> None:
        if not self.ours:
            self.poller.register(self.sock_fd, select.POLLIN)
            self.ours, self.worker.reading = True, False

    def hand_over(self) -> None:
        self.poller.unregister(self.sock_fd)
        if self.worker.hand_over():
            self.ours, self.worker.reading = False, True
        else:
            self.poller.register(self.sock_fd, select.POLLIN)

    def worker_said(self) -> None:
        """``alive`` is readable: the worker handed the socket back, or it is gone."""
        if self.worker.message() != RETURNED:
            self.poller.unregister(self.worker.alive)
            self.worker.lost()
        self.take_back()


def forward(
    tun: int,
    sock: socket.socket,
    worker: RxWorker,
    *,
    tx: Callable[[], int],
    flush: Callable[[], None],
    rx_counters: list[int],
    stop: threading.Event,
    wake: int,
) -> None:
    """The agent's forwarding thread: TUN -> UDP (TX, FLUSH), and UDP -> TUN unless WORKER
    has it, until STOP. Sleeps in poll() on the TUN, the socket while it reads it, the
    worker's pipe and WAKE."""
    rx = udp_to_tun_step(tun, sock, rx_counters)
    poller = select.poll()
    for fd in (tun, sock.fileno(), wake, worker.alive):
        if fd >= 0:
            poller.register(fd, select.POLLIN)
    reader = _Reader(poller, sock.fileno(), worker)
    poll, clock = poller.poll, time.monotonic
    window, busy = clock(), 0.0
    while not stop.is_set():
        events = poll(1000 if worker.alive >= 0 else 200)
        woke = clock()
        for fd, _events in events:
            if fd == tun:
                drain(tx, stop)
            elif fd == reader.sock_fd and reader.ours:
                drain(rx, stop)
                drain(tx, stop)  # what it wrote may have been answered at once (a ping)
            elif fd == worker.alive:
                reader.worker_said()
        flush()
        now = clock()
        busy += now - woke
        if worker.due(now) and worker.restart():
            poller.register(worker.alive, select.POLLIN)
        if now - window >= WINDOW:
            if reader.ours and busy > BUSY * (now - window):
                reader.hand_over()
            window, busy = now, 0.0


def run(tun: int, sock: socket.socket, shared: mmap.mmap, control: int, alive: int) -> None:
    """The worker: UDP -> TUN while the agent has handed it over, until CONTROL hangs up."""
    counters = [0] * 5
    step = udp_to_tun_step(tun, sock, counters)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    sock_fd, reading = sock.fileno(), False
    poll, clock, publish = poller.poll, time.monotonic, COUNTERS.pack_into
    window, busy, idle = clock(), 0.0, 0
    while True:
        events = poll(1000 if not reading else int(WINDOW * 1000))
        woke = clock()
        for fd, _events in events:
            if fd == control:
                if os.read(control, 1) != READ:
                    return
                poller.register(sock_fd, select.POLLIN)
                reading, window, busy, idle = True, woke, 0.0, 0
            else:
                drain(step)
        publish(shared, 0, *counters)
        now = clock()
        busy += now - woke
        if reading and now - window >= WINDOW:
            idle = idle + 1 if busy < IDLE * (now - window) else 0
            if idle >= IDLE_WINDOWS:
                poller.unregister(sock_fd)
                reading = False
                os.write(alive, RETURNED)
            window, busy = now, 0.0


def main(argv: list[str]) -> int:
    tun, sock_fd, memfd, control, alive = map(int, argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C on the agent's terminal: the agent stops us
    sock = socket.socket(fileno=sock_fd)
    gc.freeze()
    gc.disable()  # the loop makes no reference cycles: no collector pauses
    with contextlib.closing(mmap.mmap(memfd, COUNTERS.size)) as shared:
        run(tun, sock, shared, control, alive)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
