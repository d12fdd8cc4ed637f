"""The udp backend's opt-in ``Batching`` framing: TSO super-packets as UDP GSO trains.

With ``Batching`` the TUN hands the forwarder ``virtio_net_hdr | IPv4 packet`` of up to
~64 KiB (TCP super-packets the kernel did not segment). The sender sends each one as ONE
train: one ``sendto`` with ``UDP_SEGMENT`` (the kernel, or the NIC, cuts it into datagrams
of SEGMENT bytes, the last one shorter); the receiver reads the datagrams back with
``UDP_GRO`` (the kernel hands it a whole train at once) and writes the super-packet into its
TUN with one ``write``. A train is::

    head (6 bytes) | saved bytes (1 per datagram after the first) | super-packet

    head: 0xE (4 bits) | id (4 bits) | datagrams (1 byte) | super-packet length (2 bytes)
          | SEGMENT (2 bytes)

and the first byte of every datagram after the first is replaced by a mark, 0x80 | ((index
+ 5 x id) mod 64) for the datagram's index 1, 2, ...; the bytes the marks replaced travel, in
order, as the "saved bytes". ``id`` cycles through ROTATION values, one per train. A train
is accepted only when its length is exactly what the head says and every mark is the one of
its place and of the train's id; the receiver then puts the saved bytes back. A train that
lost, duplicated or reordered any of its datagrams is never written to the TUN (the marks of
one train all differ). Datagrams of another train (only possible when a train is put
together from several reads after losses) pass only if their marks happen to line up (a run
of them, shifted by 5 x the difference of the ids) and the length comes out exact. This
matters because the sender's virtio_net_hdr asks the receiving kernel to compute the inner
TCP checksum, which would make a wrongly rebuilt packet look valid.

All of that is a fixed number of Python operations per super-packet (stepped slices of the
train compare and move the marks), none per datagram. A train the kernel delivered in
several reads (no GRO on the way, or a GRO flush in the middle) is put together per source
and checked the same way. Heads (0xE_), marks (0x80-0xBF) and flannel's datagrams (IPv4,
0x4_) never look alike, so a Batching end also reads flannel's format.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

HEAD = 0xE0
MARK = 0x80  # marks are 0x80-0xBF
ID_BITS = 0x0F
HEAD_LEN = 6
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS on every kernel with UDP_SEGMENT
MAX_TRAIN = 65507  # the largest UDP payload over IPv4
ROOM = HEAD_LEN + MAX_SEGMENTS - 1  # head and saved bytes, at most
# TCP's own TSO limit (64 KiB minus header room) plus its headers and the virtio_net_hdr:
# what must fit one train, and so what SEGMENT must allow within MAX_SEGMENTS datagrams.
LARGEST = 65305
MIN_SEGMENT = -(-(LARGEST + HEAD_LEN - 1) // MAX_SEGMENTS) + 1
ROTATION = ID_BITS + 1
MAX_PEERS = 1024  # partial trains kept (one per sender)
# The marks of a train with id i: byte k is the mark of its datagram k.
_MARKS = [
    bytes(MARK | ((index + 5 * ident) & 0x3F) for index in range(MAX_SEGMENTS))
    for ident in range(ROTATION)
]
HEAD_FORMAT = struct.Struct(">BBHH")  # lead, datagrams, super-packet length, SEGMENT


class Framer:
    """Sender side: ``readv(tun, [framer.slot])``, then ``frame(size)`` -> the train."""

    def __init__(self, segment: int) -> None:
        if not MIN_SEGMENT <= segment <= MAX_TRAIN:
            raise ValueError(
                f"segment size {segment} out of range ({MIN_SEGMENT}..{MAX_TRAIN}): "
                f"Batching needs an underlay MTU of at least {MIN_SEGMENT + 28}"
            )
        self.segment = segment
        self.buffer = bytearray(ROOM + 65536 + 16)
        self.view = memoryview(self.buffer)
        self.slot = self.view[ROOM:]  # the super-packet is read here
        self._ident = 0

    def frame(self, size: int) -> memoryview | None:
        """The train that carries the SIZE-byte super-packet just read into ``slot``
        (None: too long for one train; never for TCP super-packets, see LARGEST)."""
        segment, buf = self.segment, self.buffer
        # Datagrams: the head, the super-packet and a saved byte for each after the first.
        count = -(-(size + HEAD_LEN - 1) // (segment - 1))
        start = ROOM - HEAD_LEN + 1 - count
        if count > MAX_SEGMENTS or ROOM + size - start > MAX_TRAIN:
            return None
        ident = self._ident = (self._ident + 1) & ID_BITS
        HEAD_FORMAT.pack_into(buf, start, HEAD | ident, count, size, segment)
        if count > 1:  # save what the marks go over (stepped slices: no loop in Python)
            first, stop = start + segment, start + (count - 1) * segment + 1
            buf[start + HEAD_LEN : ROOM] = buf[first:stop:segment]
            buf[first:stop:segment] = _MARKS[ident][1:count]
        return self.view[start : ROOM + size]


class _Partial:
    """The first reads of a train that did not come whole."""

    __slots__ = ("buffer", "have", "length")

    def __init__(self, first: memoryview, length: int) -> None:
        self.buffer = bytearray(length)
        self.buffer[: len(first)] = first
        self.have, self.length = len(first), length


class Deframer:
    """Receiver side: the trains in ``buffer[:size]`` -> super-packets to write.

    Most reads are one whole train: ``train(buffer, 0, size)`` is enough for those;
    ``packets(size, source)`` takes any read. The views returned are valid until the next
    read into ``buffer``. ``errors`` counts trains (or reads) dropped: bad head or marks,
    wrong length, unfinished; ``reassembled`` the trains put together from several reads.
    Plain flannel datagrams (IPv4) go to ``plain``, for the caller to give them an empty
    virtio_net_hdr.
    """

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.view = memoryview(buffer)
        self.errors = 0
        self.reassembled = 0
        self.plain: list[memoryview] = []
        # Unfinished trains by source; while there is one, reads go through ``packets``.
        self.partials: dict[Hashable, _Partial] = {}

    def packets(self, size: int, source: Hashable, start: int = 0) -> list[memoryview]:
        """The super-packets in a read of SIZE bytes from SOURCE, from byte START on (several
        when GRO joined trains, e.g. TCP ACKs). A read of flannel-format datagrams (IPv4
        from its first byte) goes to ``plain`` instead (emptied on every call)."""
        buf, view = self.buffer, self.view
        out: list[memoryview] = []
        if self.plain:
            self.plain = []
        if start == 0 and size and buf[0] & 0xF0 == 0x40:
            self._plain(size)
            return out
        at = start
        if at == 0 and size and buf[0] & 0xC0 == MARK:
            at = self._continue(size, source, out)
        elif self.partials and self.partials.pop(source, None) is not None:
            self.errors += 1  # a new train from SOURCE: its unfinished one will not finish
        while at < size:
            if buf[at] & 0xF0 != HEAD or size - at < HEAD_LEN:
                break
            length, packet = train(buf, at, size - at)
            if packet is not None:
                out.append(packet)
                at += length
                continue
            if length > size - at and self._start(view[at:size], length, source):
                return out  # the rest comes in later reads
            break  # a bad train: the rest of the read cannot be trusted either
        if at < size:
            self.errors += 1
        return out

    def _plain(self, size: int) -> None:
        """A read of flannel-format datagrams (GRO may join several): one IPv4 packet each."""
        buf, at = self.buffer, 0
        while at < size:
            end = at + int.from_bytes(buf[at + 2 : at + 4], "big")
            if buf[at] & 0xF0 != 0x40 or not at + 20 <= end <= size:
                self.errors += 1
                return
            self.plain.append(self.view[at:end])
            at = end

    def _start(self, first: memoryview, length: int, source: Hashable) -> bool:
        """Keep FIRST, the start of a LENGTH-byte train, for the reads that bring the rest;
        False (nothing kept) if its head cannot be right."""
        _lead, count, _size, segment = HEAD_FORMAT.unpack_from(first)
        if (
            not 1 < count <= MAX_SEGMENTS
            or not MIN_SEGMENT <= segment <= MAX_TRAIN
            or length > MAX_TRAIN
            or len(first) % segment
        ):
            return False
        if len(self.partials) >= MAX_PEERS:
            del self.partials[next(iter(self.partials))]
            self.errors += 1
        self.partials[source] = _Partial(first, length)
        return True

    def _continue(self, size: int, source: Hashable, out: list[memoryview]) -> int:
        """Datagrams that go on a train started in an earlier read: where this read's own
        trains begin (SIZE: drop the whole read, when it does not fit the train)."""
        partial = self.partials.get(source)
        if partial is None:
            self.errors += 1
            return size
        take = min(size, partial.length - partial.have)
        partial.buffer[partial.have : partial.have + take] = self.view[:take]
        partial.have += take
        if partial.have < partial.length:
            return size
        del self.partials[source]
        _length, packet = train(partial.buffer, 0, partial.length)
        if packet is None:
            self.errors += 1
            return size  # where this train ended is not known either
        self.reassembled += 1
        out.append(packet)
        return take


def train(buf: bytearray, at: int, available: int) -> tuple[int, memoryview | None]:
    """The train at AT of BUF: its length (from its head) and, if it is whole within
    AVAILABLE bytes and good, its super-packet (the saved bytes put back in place of the
    marks; BUF is left as it was otherwise)."""
    lead, count, size, segment = HEAD_FORMAT.unpack_from(buf, at)
    begin = at + HEAD_LEN - 1 + count
    length = begin + size - at
    if length > available or not 0 < count <= MAX_SEGMENTS:
        return length, None
    if count > 1:
        first, stop = at + segment, at + (count - 1) * segment + 1
        if (
            not (count - 1) * segment < length <= count * segment
            or buf[first:stop:segment] != _MARKS[lead & ID_BITS][1:count]
        ):
            return length, None
        buf[first:stop:segment] = buf[at + HEAD_LEN : begin]
    return length, memoryview(buf)[begin : begin + size]
