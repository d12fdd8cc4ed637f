"""The udp backend's opt-in ``Batching`` framing: TSO super-packets as UDP GSO trains.

With ``Batching`` the TUN hands the forwarder ``virtio_net_hdr | IPv4 packet`` of up to
~64 KiB (TCP super-packets the kernel did not segment). The sender cuts that byte string into
chunks and sends every chunk as one UDP datagram, all of them in ONE ``sendmsg`` with
``UDP_SEGMENT`` (the kernel, or the NIC, splits it); the receiver reads them back with
``UDP_GRO`` (the kernel hands it many datagrams at once) and writes the super-packet, headers
stripped, into its TUN with one ``writev``. Every datagram is::

    0xF (4 bits) | last (1 bit) | id (3 bits) | index (1 byte) | chunk

``id`` tells consecutive super-packets of one sender apart (it cycles through ROTATION
values), ``last`` marks a super-packet's last chunk, ``index`` is the chunk's position (0,
1, ...). Every datagram but the last of a super-packet has the same size (the GSO segment
size, at most path MTU - 28). 0xF_ never starts a flannel datagram (IPv4 begins with 0x4_).
The header is 2 bytes because a full TCP super-packet (46 segments of MSS 1420: 65382 bytes
with its virtio_net_hdr) plus 45 headers must fit one UDP datagram (65507 bytes): with
3-byte headers it took two trains, twice the system calls.

Per super-packet, not per chunk, is all the Python work: the sender ``readv``s the TUN
straight into the chunk slots of one of ROTATION preallocated trains whose headers (magic,
id, index) are written once at start, and only moves the "last" bit; the receiver compares
header columns with stepped slices and ``writev``s preallocated views. A train the kernel
delivered split over several reads (no GRO on the way, or a GRO flush in the middle) is
reassembled per source, in order; a gap drops the partial super-packet (TCP resends it).
"""

from __future__ import annotations

from collections.abc import Hashable

MAGIC = 0xF0
LAST = 0x08  # in the first byte: the super-packet's last datagram
ID_BITS = 0x07  # in the first byte: the id
HEADER = 2
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS on every kernel with UDP_SEGMENT
MAX_TRAIN = 65507  # the largest UDP payload over IPv4: longer trains are sent as two
ROTATION = ID_BITS + 1  # trains (and ids) the sender cycles through
LARGEST = 65536 + 10  # a TSO super-packet and its virtio_net_hdr
MAX_PEERS = 1024  # partial super-packets kept (one per sender)
_INDEX = 1  # header column
_COLUMN = [bytes([value]) * MAX_SEGMENTS for value in range(256)]
_INDEXES = bytes(range(MAX_SEGMENTS))


class Framer:
    """Sender side: ``readv(tun, framer.slots)``, then ``frame(size)`` -> what to send."""

    def __init__(self, segment: int) -> None:
        if not HEADER < segment <= MAX_TRAIN:
            raise ValueError(f"segment size {segment} out of range")
        self.segment = segment
        self.chunk = segment - HEADER
        # Only as many slots as the largest super-packet needs: readv converts each one.
        slots_needed = min(MAX_SEGMENTS, LARGEST // self.chunk + 1)
        self.capacity = self.chunk * slots_needed  # more than the largest super-packet
        self.split = MAX_TRAIN // segment * segment
        self._trains = []
        for ident in range(ROTATION):
            train = bytearray(segment * MAX_SEGMENTS)
            train[0::segment] = _COLUMN[MAGIC | ident]
            train[_INDEX::segment] = _INDEXES
            view = memoryview(train)
            slots = [view[i * segment + HEADER : (i + 1) * segment] for i in range(slots_needed)]
            self._trains.append((train, view, slots, [0]))  # [where the last mark is]
        self._next = 0
        self.buffer, self.view, self.slots, self._flag = self._trains[0]

    def frame(self, size: int) -> tuple[memoryview, int, int]:
        """Mark the last chunk of a SIZE-byte super-packet just read into ``slots``.

        Returns (train, length, datagrams): send ``train[:length]``, with ``UDP_SEGMENT`` =
        ``segment`` if there is more than one datagram; a train longer than MAX_TRAIN goes
        as two: ``train[:split]`` and ``train[split:length]``. ``slots`` then belong to the
        next train (next id).
        """
        chunk, segment, buf, flag = self.chunk, self.segment, self.buffer, self._flag
        count = (size + chunk - 1) // chunk or 1
        buf[flag[0]] &= ~LAST
        flag[0] = (count - 1) * segment
        buf[flag[0]] |= LAST
        view = self.view
        self._next = (self._next + 1) % ROTATION
        self.buffer, self.view, self.slots, self._flag = self._trains[self._next]
        return view, (count - 1) * segment + HEADER + size - (count - 1) * chunk, count


class _Partial:
    __slots__ = ("ident", "next", "parts")

    def __init__(self, ident: int) -> None:
        self.ident, self.next = ident, 0
        self.parts: list[bytes] = []


class Deframer:
    """Receiver side: datagram trains in ``buffer[base:]`` -> super-packets to ``writev``.

    The buffers returned are valid until the next read into ``buffer``. ``errors`` counts
    datagrams dropped (bad header, a gap in a super-packet, unfinished super-packets),
    ``reassembled`` the super-packets put together from several reads.
    """

    def __init__(self, buffer: bytearray, base: int) -> None:
        self.buffer, self.base = buffer, base
        self.view = memoryview(buffer)
        self.errors = 0
        self.reassembled = 0  # super-packets that took the slow path
        self._slots: dict[int, list[memoryview]] = {}
        self._partial: dict[Hashable, _Partial] = {}

    def packets(self, size: int, segment: int, source: Hashable) -> list[list[memoryview]]:
        """The super-packets completed by a train of SIZE bytes whose datagrams are SEGMENT
        bytes each (the last may be shorter; SEGMENT = SIZE for one datagram), each as a
        list of buffers for ``writev``. SOURCE tells senders apart for reassembly."""
        buf, base, view = self.buffer, self.base, self.view
        if size == segment:  # one datagram: an ACK, a ping, a short packet, a tail
            if size > HEADER and buf[base] >> 4 == MAGIC >> 4:
                return self._take(base, [view[base + HEADER : base + size]], source)
        else:
            count = (size + segment - 1) // segment
            last = base + (count - 1) * segment
            end = base + count * segment
            first, lead = buf[base + _INDEX], buf[base] & ~LAST  # magic and id
            if (
                first + count <= MAX_SEGMENTS
                and size - (last - base) > HEADER
                and buf[last] & ~LAST == lead
                and lead >> 4 == MAGIC >> 4
                and buf[base + _INDEX : end : segment] == _INDEXES[first : first + count]
                and buf[base:last:segment] == _COLUMN[lead][: count - 1]
            ):  # the common case: one super-packet, or a run of chunks of one
                slots = self._slots.get(segment)
                if slots is None:
                    slots = self._slots[segment] = [
                        view[base + i * segment + HEADER : base + (i + 1) * segment]
                        for i in range(MAX_SEGMENTS)
                    ]
                return self._take(
                    last, [*slots[: count - 1], view[last + HEADER : base + size]], source
                )
        out: list[list[memoryview]] = []
        for start in range(base, base + size, segment):  # datagram by datagram
            stop = min(start + segment, base + size)
            if stop - start <= HEADER or buf[start] >> 4 != MAGIC >> 4:
                self.errors += 1
                continue
            out += self._take(start, [view[start + HEADER : stop]], source)
        return out

    def _take(
        self, last: int, chunks: list[memoryview], source: Hashable
    ) -> list[list[memoryview]]:
        """Chunks of one super-packet (consecutive, checked), the last of them with its header
        at LAST: the super-packet if they complete it."""
        buf = self.buffer
        ident, final = buf[last] & ID_BITS, buf[last] & LAST
        index = buf[last + _INDEX] + 1 - len(chunks)
        partial = self._partial.get(source)
        if index == 0:
            if partial is not None:
                self.errors += partial.next  # an unfinished one: its datagrams are lost
                del self._partial[source]
            if final:
                return [chunks]  # the fast path: whole in one read
            partial = _Partial(ident)
            if len(self._partial) >= MAX_PEERS:
                self.errors += self._partial.pop(next(iter(self._partial))).next
            self._partial[source] = partial
        elif partial is None or (partial.ident, partial.next) != (ident, index):
            self.errors += len(chunks) + (partial.next if partial is not None else 0)
            self._partial.pop(source, None)
            return []
        partial.next += len(chunks)
        if final:
            del self._partial[source]
            self.reassembled += 1
            return [[*partial.parts, *chunks]]
        partial.parts.append(b"".join(chunks))  # copied: the buffer is read into again
        return []
