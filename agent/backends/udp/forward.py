"""The udp backend's forwarding steps in ``Batching`` mode (see agent/backends/udp/batch.py).

Each step moves at most one super-packet (or one GRO train) and returns MOVED, EMPTY (the
source had nothing: EAGAIN) or FAILED (the source fails: back off instead of spinning).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Callable

from agent.backends.udp.batch import HEAD, HEAD_LEN, ROOM, Deframer, Framer, train
from agent.backends.udp.offload import SOL_UDP, UDP_SEGMENT, VNET_HDR_LEN
from agent.backends.udp.vnet import valid_header

_IPV4_DST = struct.Struct("!I")
# Counter slots of the udp backend (both modes, both directions).
PACKETS, BYTES, DROP_UNKNOWN, DROP_ERROR, REASSEMBLED = range(5)
BAD_HEADER = DROP_UNKNOWN  # rx: super-packets whose virtio_net_hdr a peer may not send
BATCH = 256  # packets moved from one source before looking at the others (and the stop flag)
BUFFER_SIZE = 65536 + 512  # a GRO train is at most 64 KiB
MOVED, EMPTY, FAILED = 1, 0, -1
SMALL_MAX = 128  # trains up to this long (framed ACKs are 68) are sent in trains
SMALL_TRAIN = 64


def tun_to_udp_step(
    tun: int,
    *,
    segment: int,
    mask: int,
    routes: dict[int, socket.socket],
    counters: list[int],
) -> tuple[Callable[[], int], Callable[[], None]]:
    """TUN -> UDP: read one super-packet, send it as one UDP_SEGMENT train on the socket
    ROUTES has for its destination's subnet (connect()ed to the peer, UDP_SEGMENT = SEGMENT
    set: offload.open_sender). Returns the step and a flush() to call before sleeping
    (small packets wait, see _SmallTrains)."""
    framer = Framer(segment)
    frame, buf = framer.frame, framer.buffer
    dst, smallest = ROOM + VNET_HDR_LEN + 16, VNET_HDR_LEN + 20
    readv, unpack, slot = os.readv, _IPV4_DST.unpack_from, [framer.slot]
    small = _SmallTrains(counters)
    add_small, flush = small.add, small.flush

    def step() -> int:
        try:
            size = readv(tun, slot)
        except BlockingIOError:
            flush()
            return EMPTY
        except OSError:
            counters[DROP_ERROR] += 1
            return FAILED
        # Not IPv4, or too long for a train (never a TCP super-packet): dropped.
        train = frame(size) if size >= smallest and buf[ROOM + VNET_HDR_LEN] >> 4 == 4 else None
        if train is None:
            counters[DROP_ERROR] += 1
            return MOVED
        peer = routes.get(unpack(buf, dst)[0] & mask)
        if peer is None:
            counters[DROP_UNKNOWN] += 1
            return MOVED
        counters[PACKETS] += 1
        counters[BYTES] += size - VNET_HDR_LEN
        if len(train) <= SMALL_MAX:
            add_small(peer, train)
            return MOVED
        if small.count:
            flush()  # keep the order of what goes to one peer
        try:
            peer.send(train)
        except OSError:  # socket buffer full, peer unreachable, peer just removed: lost
            counters[PACKETS] -= 1
            counters[BYTES] -= size - VNET_HDR_LEN
            counters[DROP_ERROR] += 1
        return MOVED

    return step, flush


class _SmallTrains:
    """Single-datagram packets of one length to one peer (TCP ACKs, mostly) wait here and
    leave as one GSO train (one sendmsg instead of one send each) when a packet of another
    length or for another peer comes, the TUN is empty, or SMALL_TRAIN are waiting; the
    first one after the TUN was found empty does not wait (a lone ping or request). Measured:
    ~9 ACKs per train, 2.2-2.6 CPU-s per GB instead of 2.5-2.8."""

    def __init__(self, counters: list[int]) -> None:
        self.buffer = bytearray(SMALL_TRAIN * SMALL_MAX)
        self.view = memoryview(self.buffer)
        self.counters = counters
        self.peer: socket.socket | None = None
        self.length = self.count = 0
        self.fresh = True

    def add(self, peer: socket.socket, datagram: memoryview) -> None:
        length = len(datagram)
        if self.fresh:  # the first since the TUN was empty (a ping?): no waiting
            self.fresh = False
            try:
                peer.send(datagram)
            except OSError:
                self._lost(1, length)
            return
        if self.count and (peer is not self.peer or length != self.length):
            self.flush()
        start = self.count * length
        self.buffer[start : start + length] = datagram
        self.peer, self.length, self.count = peer, length, self.count + 1
        if self.count == SMALL_TRAIN:
            self.flush()

    def flush(self) -> None:
        """Send what waits; the next packet after this one goes at once (see ``add``)."""
        self.fresh = True
        count, self.count = self.count, 0
        if not count or self.peer is None:
            return
        try:
            if count == 1:
                self.peer.send(self.view[: self.length])
            else:
                gso = [(SOL_UDP, UDP_SEGMENT, self.length.to_bytes(2, sys.byteorder))]
                self.peer.sendmsg([self.view[: self.length * count]], gso)
        except OSError:
            self._lost(count, self.length)

    def _lost(self, count: int, length: int) -> None:
        """COUNT trains of LENGTH bytes were counted as sent but could not be."""
        self.counters[PACKETS] -= count
        self.counters[BYTES] -= count * (length - HEAD_LEN - VNET_HDR_LEN)
        self.counters[DROP_ERROR] += count


def udp_to_tun_step(tun: int, sock: socket.socket, counters: list[int]) -> Callable[[], int]:
    """UDP -> TUN: read one GRO train, write the super-packets it completes (one write
    each) if their virtio_net_hdr is one a peer may send (agent/backends/udp/vnet.py; else
    dropped and counted in BAD_HEADER). flannel's plain datagrams are accepted too, written
    with an empty virtio_net_hdr. Socket errors are per datagram (e.g. ICMP unreachable):
    never FAILED."""
    deframer = Deframer(bytearray(BUFFER_SIZE))
    buf, view, packets_in = deframer.buffer, deframer.view, deframer.packets
    partials = deframer.partials  # the same dict for the deframer's life
    recvfrom_into, write, writev = sock.recvfrom_into, os.write, os.writev
    no_header = bytes(VNET_HDR_LEN)
    valid = valid_header

    def put(packet: memoryview, plain: bool = False) -> None:
        """Write one super-packet (PLAIN: a flannel datagram, behind an empty header)."""
        if not plain and not valid(packet):
            counters[BAD_HEADER] += 1
            return
        try:
            written = writev(tun, [no_header, packet]) if plain else write(tun, packet)
        except OSError:
            counters[DROP_ERROR] += 1
            return
        counters[BYTES] += written - VNET_HDR_LEN
        counters[PACKETS] += 1

    def step() -> int:
        try:
            size, source = recvfrom_into(view)
        except BlockingIOError:
            return EMPTY
        except OSError:  # e.g. ICMP port unreachable reported on the socket
            counters[DROP_ERROR] += 1
            return MOVED
        start = 0
        if buf[0] & 0xF0 == HEAD and size >= HEAD_LEN and not partials:
            length, packet = train(buf, 0, size)  # most reads: one whole train
            if packet is not None:
                put(packet)
                if length == size:
                    return MOVED
                start = length  # GRO joined more to it (its last datagram was a full one)
        for packet in packets_in(size, source, start):
            put(packet)
        for packet in deframer.plain:
            put(packet, plain=True)
        if deframer.errors or deframer.reassembled:
            counters[DROP_ERROR] += deframer.errors
            counters[REASSEMBLED] += deframer.reassembled
            deframer.errors = deframer.reassembled = 0
        return MOVED

    return step
