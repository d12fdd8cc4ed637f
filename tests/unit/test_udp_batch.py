"""The udp backend's Batching framing (agent/backends/udp_batch.py), without any kernel."""

from __future__ import annotations

import os

import pytest

from agent.backends.udp_batch import HEADER, MAX_TRAIN, ROTATION, Deframer, Framer

SEGMENT = 1472
BASE = 10  # the receiver keeps room for a virtio_net_hdr in front


def _read_into(framer: Framer, data: bytes) -> None:
    """What readv(tun, framer.slots) does: fill the slots in order."""
    offset = 0
    for slot in framer.slots:
        piece = data[offset : offset + len(slot)]
        slot[: len(piece)] = piece
        offset += len(piece)
        if offset >= len(data):
            return


def _trains(framer: Framer, data: bytes) -> list[bytes]:
    """The UDP_SEGMENT trains the sender hands the kernel for DATA."""
    _read_into(framer, data)
    view, length, _count = framer.frame(len(data))
    train = bytes(view[:length])
    if length <= MAX_TRAIN:
        return [train]
    return [train[: framer.split], train[framer.split :]]


def _datagrams(train: bytes) -> list[bytes]:
    return [train[i : i + SEGMENT] for i in range(0, len(train), SEGMENT)]


def _deliver(deframer: Deframer, reads: list[bytes], source: str = "peer") -> list[bytes]:
    """Feed reads (each one GRO train of SEGMENT-byte datagrams) to DEFRAMER."""
    out = []
    for read in reads:
        deframer.buffer[BASE : BASE + len(read)] = read
        segment = SEGMENT if len(read) > SEGMENT else len(read)
        for packet in deframer.packets(len(read), segment, source):
            out.append(b"".join(bytes(part) for part in packet))
    return out


def _deframer() -> Deframer:
    return Deframer(bytearray(BASE + 65536), BASE)


@pytest.mark.parametrize("size", [30, SEGMENT - HEADER, SEGMENT - HEADER + 1, 40000, 65546])
def test_super_packets_survive_whole_split_and_datagram_by_datagram(size: int) -> None:
    data = os.urandom(size)
    trains = _trains(Framer(SEGMENT), data)
    assert all(len(train) <= MAX_TRAIN for train in trains)
    assert len(trains) == (2 if size == 65546 else 1)
    whole, single = _deframer(), _deframer()
    assert _deliver(whole, trains) == [data]
    assert _deliver(single, [d for t in trains for d in _datagrams(t)]) == [data]
    assert whole.errors == single.errors == 0
    assert whole.reassembled == len(trains) - 1  # one read each: the fast path
    assert single.reassembled == (1 if size > SEGMENT - HEADER else 0)


def test_headers_number_packets_and_chunks() -> None:
    framer = Framer(SEGMENT)
    first = _trains(framer, bytes(3000))[0]
    second = _trains(framer, bytes(100))[0]
    assert [d[:HEADER] for d in _datagrams(first)] == [b"\xf0\x00", b"\xf0\x01", b"\xf8\x02"]
    assert second[:HEADER] == b"\xf9\x00"
    assert len(second) == HEADER + 100
    for _ in range(ROTATION - 1):  # the first train again: its old "last" bit is gone
        again = _trains(framer, bytes(5000))[0]
    assert [d[0] for d in _datagrams(again)] == [0xF0, 0xF0, 0xF0, 0xF8]


def test_the_largest_tso_packet_fits_one_datagram() -> None:
    """46 segments of MSS 1420 and their headers, plus the virtio_net_hdr: one train (one
    sendmsg, one read on the other side)."""
    assert len(_trains(Framer(SEGMENT), bytes(10 + 46 * 1420 + 52))) == 1


def test_a_gap_drops_the_packet_and_the_next_one_gets_through() -> None:
    framer, deframer = Framer(SEGMENT), _deframer()
    lossy, good = os.urandom(10000), os.urandom(5000)
    datagrams = _datagrams(_trains(framer, lossy)[0])
    del datagrams[3]
    assert _deliver(deframer, datagrams) == []
    assert _deliver(deframer, _trains(framer, good)) == [good]
    assert deframer.errors == len(datagrams)  # every datagram of the broken packet


def test_gro_read_spanning_two_packets_and_two_sources() -> None:
    framer, deframer = Framer(SEGMENT), _deframer()
    one, two = os.urandom(2 * (SEGMENT - HEADER)), os.urandom(3000)
    # One read holding a whole packet (full-size last datagram) and the start of the next.
    first, second = _trains(framer, one)[0], _datagrams(_trains(framer, two)[0])
    assert _deliver(deframer, [first + second[0]]) == [one]
    other = Framer(SEGMENT)
    stranger = os.urandom(4000)
    assert _deliver(deframer, _trains(other, stranger), source="other") == [stranger]
    assert _deliver(deframer, [second[1] + second[2]]) == [two]
    assert deframer.errors == 0


def test_garbage_is_counted_not_raised() -> None:
    deframer = _deframer()
    assert _deliver(deframer, [b"\xf1\x02", b"\x00" * 100, b"\xfa\x05xx"]) == []
    assert deframer.errors == 3


def test_segment_size_bounds() -> None:
    with pytest.raises(ValueError, match="segment size"):
        Framer(HEADER)
    assert Framer(1280).capacity >= 65546  # any IPv4 underlay MTU carries a whole TSO packet
