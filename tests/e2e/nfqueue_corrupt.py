"""Corrupts UDP payloads in flight: a minimal nfnetlink_queue client (no library needed).

The lab kernel has neither netem nor pedit nor act_gact, so `tc ... netem corrupt` is not an
option. Instead, the lab switch's FORWARD chain (bridge netfilter) sends the chosen datagrams to
an NFQUEUE, and this program hands each one back with its last byte flipped. The kernel then
delivers the frame with `ip_summed = CHECKSUM_NONE`, so the receiving host checks the UDP
checksum in software and counts the error (`UdpInCsumErrors`), as behind a broken offload.

Run inside the switch namespace (tests/e2e/faults.py does): `python -m tests.e2e.nfqueue_corrupt
QUEUE`. Prints `ready` once bound, then runs until SIGTERM. The queue rule uses
--queue-bypass, so traffic passes unharmed whenever this process is gone.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    """An nfnetlink message of the queue subsystem for QUEUE."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return (
        struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body
    )


def attrs_of(data: bytes) -> dict[int, bytes]:
    """The attributes after an nfgenmsg header (type -> payload; nested flag bits cleared)."""
    found, offset = {}, 4
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def messages(buffer: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each netlink message in BUFFER."""
    offset = 0
    while offset + 16 <= len(buffer):
        length, kind = struct.unpack_from("=IH", buffer, offset)
        if length < 16:
            return
        yield kind, buffer[offset + 16 : offset + length]
        offset += (length + 3) & ~3


def corrupted(payload: bytes) -> bytes:
    """PAYLOAD (an IPv4 packet) with its last byte flipped: inside the UDP payload."""
    return payload[:-1] + bytes([payload[-1] ^ 0xFF]) if payload else payload


def bind(sock: socket.socket, queue: int) -> None:
    cmd = attr(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0))
    params = attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))
    for attrs in (cmd, params):
        sock.send(message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK))
        for kind, body in messages(sock.recv(65536)):
            if kind == NLMSG_ERROR and struct.unpack_from("=i", body)[0] != 0:
                raise OSError(-struct.unpack_from("=i", body)[0], f"binding queue {queue}")


def serve(queue: int) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 0))
    bind(sock, queue)
    print("ready", flush=True)
    while True:
        for kind, body in messages(sock.recv(1 << 17)):
            if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            found = attrs_of(body)
            packet_id = struct.unpack_from("!I", found[NFQA_PACKET_HDR])[0]
            verdict = attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
            payload = attr(NFQA_PAYLOAD, corrupted(found.get(NFQA_PAYLOAD, b"")))
            sock.send(message(NFQNL_MSG_VERDICT, queue, verdict + payload))


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(int(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
