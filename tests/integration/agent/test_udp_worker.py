"""The udp backend's Batching receive path with real sockets and a real worker process.

Only 127.0.0.1 is used; the TUN is played by an AF_UNIX datagram socket pair (one write, one
packet, as on a TUN).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from agent.backends.udp.batch import Framer
from agent.backends.udp.forward import BAD_HEADER, PACKETS, udp_to_tun_step
from agent.backends.udp.offload import open_sender, open_socket
from agent.backends.udp.worker import RETURNED, RxWorker
from tests.polling import wait_for

SEGMENT = 1472


@pytest.fixture
def wire() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(receiving socket, a sender connected to it, the TUN's agent end, its kernel end)."""
    receiving = open_socket("127.0.0.1", 0, SEGMENT)
    sender = open_sender("127.0.0.1", receiving.getsockname(), SEGMENT)
    tun, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kernel.settimeout(5)
    yield receiving, sender, tun, kernel
    for sock in (receiving, sender, tun, kernel):
        sock.close()


def _train(framer: Framer, data: bytes) -> bytes:
    framer.slot[: len(data)] = data
    train = framer.frame(len(data))
    assert train is not None
    return bytes(train)


def _packet(size: int) -> bytes:
    """SIZE bytes a peer may send: an empty virtio_net_hdr (no offload asked) and an IPv4
    packet with random payload (the receiver checks the header, agent/backends/udp/vnet.py)."""
    head = bytes([0x45, 0]) + (size - 10).to_bytes(2, "big") + bytes(5) + b"\x11" + bytes(10)
    return bytes(10) + head + os.urandom(size - 30)


def _readable(fd: int, seconds: float = 5) -> bool:
    return bool(select.select([fd], [], [], seconds)[0])


def test_a_read_holding_a_whole_train_and_more_delivers_both(wire) -> None:
    """GRO joins a train whose last datagram is a full one with the next: the first is
    written by the fast path, the rest still parsed (not dropped)."""
    receiving, sender, tun, kernel = wire
    counters = [0] * 5
    step = udp_to_tun_step(tun.fileno(), receiving, counters)
    framer = Framer(SEGMENT)
    one, two = _packet(2 * SEGMENT - 7), _packet(62)  # one: two full datagrams
    sender.send(_train(framer, one) + _train(framer, two))  # cut into datagrams by GSO
    assert _readable(receiving.fileno())
    while step() == 1:
        pass
    assert [kernel.recv(65536), kernel.recv(65536)] == [one, two]
    assert counters[PACKETS] == 2 and counters[3] == 0


def test_a_header_a_peer_may_not_send_is_dropped_and_counted(wire) -> None:
    """Issue 17: the virtio_net_hdr comes off the wire; one asking for UDP segmentation (UFO)
    of a TCP packet never reaches the TUN, the good train after it does."""
    receiving, sender, tun, kernel = wire
    counters = [0] * 5
    step = udp_to_tun_step(tun.fileno(), receiving, counters)
    framer = Framer(SEGMENT)
    bad, good = bytearray(_packet(3000)), _packet(3000)
    bad[0:6] = bytes([1, 3, 52, 0, 0xB8, 0x05])  # NEEDS_CSUM, GSO UDP, hdr_len 52, 1464
    sender.send(_train(framer, bytes(bad)))
    sender.send(_train(framer, good))
    wait_for(lambda: step() and counters[PACKETS] + counters[BAD_HEADER] == 2, 5, "both read")
    assert kernel.recv(65536) == good and counters[BAD_HEADER] == 1
    assert not _readable(kernel.fileno(), 0.2)  # the bad one was never written


def test_worker_receives_when_handed_over_gives_back_when_idle_and_is_reaped(wire) -> None:
    receiving, sender, tun, kernel = wire
    worker = RxWorker(tun.fileno(), receiving)
    try:
        assert worker.start()
        pid = worker.pid
        assert pid is not None and worker.hand_over()
        framer = Framer(SEGMENT)
        sent = [_packet(size) for size in (100, 5000, 64000)]
        for data in sent:
            sender.send(_train(framer, data))
        assert [kernel.recv(65536) for _ in sent] == sent
        wait_for(lambda: worker.counters()[PACKETS] == 3 or None, 5, "published counters")
        assert _readable(worker.alive) and worker.message() == RETURNED  # ~0.5 s idle
        worker.stop()
        with pytest.raises(ChildProcessError):  # stop() waited for it: no zombie left
            os.waitpid(pid, os.WNOHANG)
        assert worker.counters()[PACKETS] == 3  # what it counted outlives it
    finally:
        worker.close()


def test_a_dead_worker_is_noticed_and_restarted_less_and_less_often(wire) -> None:
    receiving, _sender, tun, _kernel = wire
    worker = RxWorker(tun.fileno(), receiving)
    try:
        for delay in (1.0, 2.0, 4.0):  # each worker dies at once: the wait doubles
            started = time.monotonic()
            assert worker.start() if delay == 1.0 else worker.restart()
            pid = worker.pid
            assert pid is not None and not worker.due(time.monotonic())  # running
            os.kill(pid, signal.SIGKILL)
            assert _readable(worker.alive) and worker.message() == b""  # gone, not RETURNED
            worker.lost()
            assert not worker.due(started + delay - 0.2)
            assert worker.due(started + delay + 0.2)
        assert worker.restarts == 2
    finally:
        worker.close()
