"""The udp backend's check of the virtio_net_hdr a Batching peer sends (agent/backends/udp/
vnet.py): what the kernel's TUN hands a forwarder passes; everything else, and any bytes at
all, is refused without an exception (hypothesis)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.backends.udp.vnet import (
    DATA_VALID,
    GSO_ECN,
    GSO_TCPV4,
    NEEDS_CSUM,
    VNET_HDR,
    valid_header,
)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def ipv4(size: int, proto: int = 6, ihl: int = 5, total: int | None = None) -> bytes:
    """An IPv4 packet of SIZE bytes (header fields only; the payload is zeros)."""
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, size if total is None else total, 0, 0,
                       64, proto, 0, bytes(4), bytes(4))  # fmt: skip
    return head + bytes(size - 20)


def packet(fields: tuple[int, ...], ip: bytes) -> bytes:
    return VNET_HDR.pack(*fields) + ip


# What the kernel's virtio_net_hdr_from_skb produces for IPv4.
GOOD = [
    ((0, 0, 0, 0, 0, 0), ipv4(60)),  # nothing asked (or flannel's plain datagram)
    ((DATA_VALID, 0, 0, 0, 0, 0), ipv4(60)),  # checksum already verified
    ((NEEDS_CSUM, 0, 0, 0, 20, 16), ipv4(60)),  # TCP, checksum left to do
    ((NEEDS_CSUM, 0, 0, 0, 20, 6), ipv4(60, proto=17)),  # UDP, checksum left to do
    ((NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16), ipv4(65000)),  # a TSO super-packet
    ((NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 52, 1448, 20, 16), ipv4(30000)),
    ((NEEDS_CSUM, GSO_TCPV4, 1500, 1448, 24, 16), ipv4(3000, ihl=6)),  # IP options
]
BAD = {
    "unknown flag": ((0x04, 0, 0, 0, 0, 0), ipv4(60)),
    "UDP offload (UFO)": ((NEEDS_CSUM, 3, 28, 1472, 20, 6), ipv4(9000, proto=17)),
    "TCPv6 on IPv4": ((NEEDS_CSUM, 4, 52, 1448, 20, 16), ipv4(9000)),
    "SCTP-ish gso type": ((NEEDS_CSUM, 0x7F, 52, 1448, 20, 16), ipv4(9000)),
    "ECN alone": ((NEEDS_CSUM, GSO_ECN, 52, 1448, 20, 16), ipv4(9000)),
    "GSO on UDP": ((NEEDS_CSUM, GSO_TCPV4, 28, 1448, 20, 6), ipv4(9000, proto=17)),
    "GSO without NEEDS_CSUM": ((0, GSO_TCPV4, 52, 1448, 0, 0), ipv4(9000)),
    "GSO size 0": ((NEEDS_CSUM, GSO_TCPV4, 52, 0, 20, 16), ipv4(9000)),
    "hdr_len past the packet": ((NEEDS_CSUM, GSO_TCPV4, 9001, 1448, 20, 16), ipv4(9000)),
    "hdr_len 0 with GSO": ((NEEDS_CSUM, GSO_TCPV4, 0, 1448, 20, 16), ipv4(9000)),
    "gso_size without GSO": ((NEEDS_CSUM, 0, 0, 1448, 20, 16), ipv4(60)),
    "hdr_len without GSO": ((NEEDS_CSUM, 0, 40, 0, 20, 16), ipv4(60)),
    "checksum past the end": ((NEEDS_CSUM, 0, 0, 0, 50, 16), ipv4(60)),
    "checksum in the IP header": ((NEEDS_CSUM, 0, 0, 0, 0, 10), ipv4(60)),
    "checksum at UDP's place in TCP": ((NEEDS_CSUM, 0, 0, 0, 20, 6), ipv4(60)),
    "checksum for ICMP": ((NEEDS_CSUM, 0, 0, 0, 20, 2), ipv4(60, proto=1)),
    "csum fields without NEEDS_CSUM": ((0, 0, 0, 0, 20, 16), ipv4(60)),
    "IP total length lies": ((0, 0, 0, 0, 0, 0), ipv4(60, total=1500)),
    "IP header longer than the packet": ((0, 0, 0, 0, 0, 0), ipv4(20, ihl=15)),
    "IP header length under 20": ((0, 0, 0, 0, 0, 0), ipv4(60, ihl=4)),
}


@pytest.mark.parametrize(("fields", "ip"), GOOD)
def test_what_a_peer_kernel_sends_passes(fields: tuple[int, ...], ip: bytes) -> None:
    assert valid_header(packet(fields, ip))
    assert valid_header(memoryview(bytearray(packet(fields, ip))))  # as the receiver has it


@pytest.mark.parametrize("name", sorted(BAD))
def test_anything_else_is_refused(name: str) -> None:
    fields, ip = BAD[name]
    assert not valid_header(packet(fields, ip)), name


def test_not_ipv4_or_too_short_is_refused() -> None:
    assert not valid_header(bytes(29))
    assert not valid_header(bytes(10) + b"\x60" + bytes(59))  # IPv6
    assert not valid_header(b"")


_FIELDS = st.tuples(
    st.sampled_from([0, 1, 2, 3]) | st.integers(0, 255),
    st.sampled_from([0, 1, 0x81, 3, 4, 5]) | st.integers(0, 255),
    *(st.sampled_from([0, 20, 52, 1448, 65535]) | st.integers(0, 0xFFFF) for _ in range(4)),
)


@FUZZ
@given(_FIELDS, st.integers(20, 70000), st.sampled_from([6, 17, 1]), st.integers(0, 15))
def test_fuzz_only_sane_headers_pass(
    fields: tuple[int, ...], size: int, proto: int, ihl: int
) -> None:
    total = size if size <= 0xFFFF else size & 0xFFFF
    data = packet(fields, ipv4(size, proto, ihl, total))
    if not valid_header(data):
        return
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = fields
    assert size <= 0xFFFF and 20 <= ihl * 4 <= size
    assert flags & ~3 == 0 and gso_type in (0, 1, 0x81)
    if gso_type:
        assert proto == 6 and flags & 1 and gso_size and 0 < hdr_len <= size
    else:
        assert hdr_len == gso_size == 0
    if flags & 1:
        assert ihl * 4 <= csum_start and csum_start + csum_off + 2 <= size
    else:
        assert csum_start == csum_off == 0


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_never_raise(data: bytes) -> None:
    assert valid_header(data) in (True, False)
