"""What a ``Batching`` peer may put in the ``virtio_net_hdr`` it sends before each super-packet.

The receiver writes ``virtio_net_hdr | IPv4 packet`` into its TUN as it came off the wire, and
the header tells the kernel how to segment the packet and where to put a checksum. So it is
checked first against what a peer's kernel legitimately hands its forwarder for an IPv4
packet (``virtio_net_hdr_from_skb``, the only source of these headers), and anything else is
dropped and counted (``rx_drops_bad_header``), never written:

- flags: none, NEEDS_CSUM and/or DATA_VALID;
- gso_type: NONE, TCPV4 or TCPV4 | ECN (we forward IPv4 only and never offload UDP);
- without GSO, ``hdr_len`` and ``gso_size`` are 0; with it, the packet is TCP, NEEDS_CSUM is
  set, ``gso_size`` > 0 and ``hdr_len`` within the packet;
- with NEEDS_CSUM, the checksum's place is inside the packet, after the IPv4 header, at
  TCP's (16) or UDP's (6) offset for the packet's protocol; without it, both fields are 0;
- the IPv4 header itself: version 4, a header length of 20-60 bytes within the packet, and
  a total length equal to the packet's.

A fixed handful of operations per super-packet (one ``unpack_from``), none per byte.
"""

from __future__ import annotations

import struct

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_off
NEEDS_CSUM, DATA_VALID = 0x01, 0x02
GSO_NONE, GSO_TCPV4, GSO_ECN = 0x00, 0x01, 0x80
GSO_TYPES = frozenset({GSO_NONE, GSO_TCPV4, GSO_TCPV4 | GSO_ECN})
CSUM_OFFSETS = {6: 16, 17: 6}  # IP protocol -> where its checksum sits in its header
TCP = 6


def valid_header(packet: bytes | bytearray | memoryview) -> bool:
    """True when PACKET (``virtio_net_hdr | IPv4 packet``) is what a peer may send."""
    size = len(packet) - VNET_HDR.size
    if size < 20:
        return False
    lead, proto = packet[VNET_HDR.size], packet[VNET_HDR.size + 9]
    ihl = (lead & 0x0F) * 4
    total = int.from_bytes(packet[VNET_HDR.size + 2 : VNET_HDR.size + 4], "big")
    if lead >> 4 != 4 or not 20 <= ihl <= size or total != size:
        return False
    return _offload_ok(VNET_HDR.unpack_from(packet), size, ihl, proto)


def _offload_ok(fields: tuple[int, ...], size: int, ihl: int, proto: int) -> bool:
    """The header's fields against a SIZE-byte IPv4 packet of protocol PROTO."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = fields
    if flags & ~(NEEDS_CSUM | DATA_VALID) or gso_type not in GSO_TYPES:
        return False
    if gso_type == GSO_NONE:
        if hdr_len or gso_size:
            return False
    elif proto != TCP or not flags & NEEDS_CSUM or not gso_size or not 0 < hdr_len <= size:
        return False
    if not flags & NEEDS_CSUM:
        return not (csum_start or csum_off)
    return csum_off == CSUM_OFFSETS.get(proto) and ihl <= csum_start <= size - csum_off - 2
