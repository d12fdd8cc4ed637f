"""Send hand-made tunnel packets from inside a lab namespace (run there as a script).

    python inject_frames.py vxlan|udp DEST PORT COUNT INNER_SRC INNER_DST [DEST_MAC]

vxlan: a VXLAN frame (VNI 1) whose inner Ethernet frame goes to DEST_MAC (the far VTEP's MAC)
and carries an ICMP echo request INNER_SRC -> INNER_DST; udp: the bare IPv4 packet, as the
udp backend (flannel's format) carries it. What an attacker on the LAN can send with no
credentials at all: the test checks that it only gets through from a peer's address.
"""

from __future__ import annotations

import socket
import struct
import sys
from ipaddress import IPv4Address


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(src: str, dst: str, seq: int) -> bytes:
    """An IPv4 ICMP echo request SRC -> DST with valid checksums."""
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"peers-only test"
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq, 0, 64, 1, 0,
        IPv4Address(src).packed, IPv4Address(dst).packed,
    )  # fmt: skip
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + body


def vxlan(packet: bytes, dest_mac: str, vni: int = 1) -> bytes:
    """PACKET in an Ethernet frame to DEST_MAC behind a VXLAN header with VNI."""
    header = struct.pack("!II", 0x08000000, vni << 8)
    ether = bytes.fromhex(dest_mac.replace(":", "")) + bytes.fromhex("02aabbccddee") + b"\x08\x00"
    return header + ether + packet


def main(argv: list[str]) -> int:
    kind, dest, port, count, src, dst = argv[1:7]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for seq in range(int(count)):
            packet = icmp_echo(src, dst, seq + 1)
            sock.sendto(vxlan(packet, argv[7]) if kind == "vxlan" else packet, (dest, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
