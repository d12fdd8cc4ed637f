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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run as a script: the checkout
# The packet builders doctor's probe uses (a host script: the standard library only).
from overlayctl.remote.scripts.doctor_probe import checksum, ipv4, vxlan


def icmp_echo(src: str, dst: str, seq: int) -> bytes:
    """An IPv4 ICMP echo request SRC -> DST with valid checksums."""
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"peers-only test"
    return ipv4(src, dst, body[:2] + struct.pack("!H", checksum(body)) + body[4:])


def main(argv: list[str]) -> int:
    kind, dest, port, count, src, dst = argv[1:7]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for seq in range(int(count)):
            packet = icmp_echo(src, dst, seq + 1)
            if kind == "vxlan":
                packet = vxlan(1, argv[7], "02:aa:bb:cc:dd:ee", packet)
            sock.sendto(packet, (dest, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
