"""The udp backend's Batching framing (agent/backends/udp/batch.py), without any kernel.

The kernel's part is played by slicing: UDP_SEGMENT cuts a train every SEGMENT bytes, UDP GRO
hands the receiver runs of those datagrams in one read.
"""

from __future__ import annotations

import os

import pytest

from agent.backends.udp.batch import (
    HEAD_LEN,
    LARGEST,
    MAX_TRAIN,
    MIN_SEGMENT,
    ROTATION,
    Deframer,
    Framer,
    train,
)

SEGMENT = 1472


def _train(framer: Framer, data: bytes) -> bytes:
    """What the sender hands the kernel for DATA (read into the slot as readv would)."""
    framer.slot[: len(data)] = data
    train = framer.frame(len(data))
    assert train is not None
    return bytes(train)


def _datagrams(train: bytes, segment: int = SEGMENT) -> list[bytes]:
    return [train[i : i + segment] for i in range(0, len(train), segment)]


def _deliver(deframer: Deframer, reads: list[bytes], source: str = "peer") -> list[bytes]:
    """Feed READS (each what one recvfrom returns) to DEFRAMER: the packets it gives back,
    flannel-format ones included."""
    out = []
    for read in reads:
        deframer.buffer[: len(read)] = read
        out += [bytes(p) for p in deframer.packets(len(read), source)]
        out += [b"plain:" + bytes(p) for p in deframer.plain]
    return out


def _deframer() -> Deframer:
    return Deframer(bytearray(65536 + 512))


@pytest.mark.parametrize(
    "size", [30, SEGMENT - HEAD_LEN, SEGMENT - HEAD_LEN + 1, 2 * SEGMENT, 40000, LARGEST]
)
def test_super_packets_survive_whole_and_datagram_by_datagram(size: int) -> None:
    data = os.urandom(size)
    train = _train(Framer(SEGMENT), data)
    count = len(_datagrams(train))
    assert count == train[1] and len(train) <= MAX_TRAIN
    assert len(train) == HEAD_LEN + count - 1 + size
    # No more datagrams than needed:
    assert count == 1 or HEAD_LEN + count - 2 + size > (count - 1) * SEGMENT
    whole, single = _deframer(), _deframer()
    assert _deliver(whole, [train]) == [data]
    assert _deliver(single, _datagrams(train)) == [data]
    assert whole.errors == single.errors == whole.reassembled == 0
    assert single.reassembled == (1 if count > 1 else 0)


def test_marks_replace_one_byte_per_datagram_and_the_head_keeps_them() -> None:
    framer = Framer(SEGMENT)
    data = bytes(range(256)) * 12  # 3072 bytes: three datagrams
    train = _train(framer, data)
    pieces = _datagrams(train)
    assert len(pieces) == 3
    ident = train[0] & 0x0F
    head = bytes([0xE0 | ident, 3]) + (3072).to_bytes(2, "big") + SEGMENT.to_bytes(2, "big")
    assert train[:HEAD_LEN] == head
    assert [p[0] for p in pieces[1:]] == [0x80 | ((k + 5 * ident) % 64) for k in (1, 2)]
    start = HEAD_LEN + 2  # where the data begins in the train: head and 2 saved bytes
    marked = [SEGMENT - start, 2 * SEGMENT - start]  # data offsets the marks went over
    assert train[HEAD_LEN:start] == bytes(data[i] for i in marked)
    assert _train(framer, b"x" * 100)[0] == 0xE0 | ((ident + 1) % ROTATION)


def test_a_lost_reordered_or_duplicated_datagram_drops_the_train() -> None:
    framer = Framer(SEGMENT)
    data = os.urandom(10000)
    pieces = _datagrams(_train(framer, data))
    lost = pieces[:3] + pieces[4:]
    swapped = [pieces[0], pieces[2], pieces[1], *pieces[3:]]
    doubled = [*pieces[:2], pieces[1], *pieces[3:]]  # same length as the train
    good = os.urandom(5000)
    for broken in (lost, swapped, doubled):
        for reads in ([b"".join(broken)], broken):  # in one read, or datagram by datagram
            deframer = _deframer()
            assert _deliver(deframer, reads) == []
            # A short train waits for the rest until the next one starts; then it counts.
            assert _deliver(deframer, [_train(framer, good)]) == [good]
            assert deframer.errors == 1


def test_datagrams_of_two_trains_are_not_mixed() -> None:
    """Same length, same positions, different trains: the marks' ids tell them apart."""
    framer = Framer(SEGMENT)
    one = _datagrams(_train(framer, os.urandom(4000)))
    two = _datagrams(_train(framer, os.urandom(4000)))
    deframer = _deframer()
    assert _deliver(deframer, [one[0] + two[1] + one[2]]) == []
    assert deframer.errors == 1


def test_gro_read_with_a_train_and_the_start_of_the_next_and_two_sources() -> None:
    framer, deframer = Framer(SEGMENT), _deframer()
    one = os.urandom(2 * SEGMENT - HEAD_LEN - 1)  # the last datagram is a full one
    two = os.urandom(3000)
    first, second = _train(framer, one), _datagrams(_train(framer, two))
    assert len(first) == 2 * SEGMENT
    assert _deliver(deframer, [first + second[0]]) == [one]
    stranger = os.urandom(4000)
    assert _deliver(deframer, [_train(Framer(SEGMENT), stranger)], source="other") == [stranger]
    assert _deliver(deframer, [second[1] + second[2]]) == [two]
    assert deframer.errors == 0 and deframer.reassembled == 1


def test_acks_joined_by_gro_and_flannel_datagrams() -> None:
    framer, deframer = Framer(SEGMENT), _deframer()
    acks = [os.urandom(62) for _ in range(9)]
    joined = b"".join(_train(framer, ack) for ack in acks)
    assert _deliver(deframer, [joined]) == acks
    ipv4 = bytes([0x45, 0]) + (40).to_bytes(2, "big") + os.urandom(36)
    assert _deliver(deframer, [ipv4 + ipv4]) == [b"plain:" + ipv4] * 2
    assert deframer.errors == 0


def test_garbage_and_orphans_are_counted_not_raised() -> None:
    deframer = _deframer()
    orphan = _datagrams(_train(Framer(SEGMENT), os.urandom(3000)))[1]
    reads = [b"\xe1\x02", b"\x00" * 100, b"\xe5\x00\x00\x10\x05\xc0" + bytes(16), orphan]
    bad_segment = bytearray(_train(Framer(SEGMENT), os.urandom(3000)))
    bad_segment[4:6] = b"\x00\x00"
    assert _deliver(deframer, [*reads, bytes(bad_segment)]) == []
    assert deframer.errors == 5


def test_an_unfinished_train_is_given_up_when_its_source_starts_another() -> None:
    framer, deframer = Framer(SEGMENT), _deframer()
    first = _datagrams(_train(framer, os.urandom(5000)))
    stranger = os.urandom(3000)
    assert _deliver(deframer, [first[0]]) == []
    assert _deliver(deframer, [_train(Framer(SEGMENT), stranger)], "other") == [stranger]
    assert deframer.errors == 0  # another source: the first train may still come
    good = os.urandom(3000)
    assert _deliver(deframer, [first[1], _train(framer, good), first[2]]) == [good]
    assert deframer.errors == 2  # the unfinished train, then its orphaned last datagram


def test_segment_size_bounds() -> None:
    with pytest.raises(ValueError, match="underlay MTU of at least"):
        Framer(MIN_SEGMENT - 1)
    framer = Framer(MIN_SEGMENT)  # the smallest still carries TCP's largest super-packet
    assert framer.frame(LARGEST) is not None
    assert framer.frame(65536) is None


def test_a_read_that_goes_on_after_a_whole_train_is_parsed_from_where_it_ended() -> None:
    """What the receive step does: the first train checked (and its bytes put back) by
    train(), the rest of the read by packets(start=...)."""
    framer, deframer = Framer(SEGMENT), _deframer()
    one = os.urandom(2 * SEGMENT - HEAD_LEN - 1)  # its last datagram is a full one
    two = os.urandom(62)
    read = _train(framer, one) + _train(framer, two)
    deframer.buffer[: len(read)] = read
    length, packet = train(deframer.buffer, 0, len(read))
    assert packet is not None and bytes(packet) == one and length == 2 * SEGMENT
    assert [bytes(p) for p in deframer.packets(len(read), "peer", length)] == [two]
    assert deframer.errors == 0


def test_a_failed_reassembly_drops_the_rest_of_its_read() -> None:
    """A train put together from the wrong datagrams fails its check; where it would have
    ended tells nothing, so nothing after it is parsed (not even as flannel's format)."""
    framer, deframer = Framer(SEGMENT), _deframer()
    lost_tail = _datagrams(_train(framer, os.urandom(2 * SEGMENT)))  # 3 datagrams
    ipv4 = bytes([0x45, 0]) + (40).to_bytes(2, "big") + bytes(36)
    longer = bytearray(os.urandom(4 * SEGMENT))
    # Where the short train would end in the longer one's data: its length (head, 2 saved
    # bytes, 2 * SEGMENT) less the longer train's head and 4 saved bytes.
    at = HEAD_LEN + 2 + 2 * SEGMENT - (HEAD_LEN + 4)
    longer[at : at + 40] = ipv4
    lost_head = _datagrams(_train(framer, bytes(longer)))  # 5 datagrams
    assert _deliver(deframer, [lost_tail[0], b"".join(lost_head[1:4])]) == []
    assert deframer.plain == [] and deframer.errors == 1
