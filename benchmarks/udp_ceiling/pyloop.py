"""The udp backend's Batching forwarder as a standalone process, same command line as
udp_ceiling (the C loop), for compare.py ``--py NAME='benchmarks/udp_ceiling/pyloop.py ...'``.
A study tool for issue #8 (see README.md), not part of overlayctl or of CI.

``--impl agent`` (default) runs agent/backends/udp/forward.py's steps unchanged, in the loop of
UdpBackend._forward_batched (poll, drain each ready fd <= 256 steps, flush); the other
``--impl`` values are experiments from pyloop_fast.py (copies, nothing in agent/ is changed):

- ``agent``: as the agent does it (but in the main thread, no other threads);
- ``flat``, ``train``, ``train-acks``,
  ``train-connected``: see pyloop_fast.py;
- any of them with ``--busy-poll US`` (SO_BUSY_POLL), ``--napi`` (IFF_NAPI on the TUN),
  ``--sockbuf BYTES``, ``--spin`` (poll with timeout 0).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

# E402 below: agent/ is found only once ROOT is on sys.path (benchmarks' convention);
# pyloop_fast sits next to this script, which Python puts on sys.path itself.
import pyloop_fast  # noqa: E402

from agent.backends.udp import offload as udp_offload  # noqa: E402
from agent.backends.udp.forward import FAILED, MOVED, tun_to_udp_step, udp_to_tun_step  # noqa: E402

IFF_NAPI = 0x0010
SO_BUSY_POLL = getattr(socket, "SO_BUSY_POLL", 46)
Step = Callable[[], int]


def open_tun(name: str, *, napi: bool) -> int:
    """The TUN device NAME with the agent's flags and offloads (IFF_NAPI too if NAPI)."""
    flags = udp_offload.IFF_TUN | udp_offload.IFF_NO_PI | udp_offload.IFF_VNET_HDR
    flags |= IFF_NAPI if napi else 0
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, udp_offload.TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    fcntl.ioctl(fd, udp_offload.TUNSETOFFLOAD, udp_offload.OFFLOADS)
    return fd


def parse_args() -> argparse.Namespace:
    """The C loop's command line (udp_ceiling.c), plus --impl and --sockbuf."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-t", dest="tun", required=True, help="TUN device name")
    p.add_argument("-b", dest="bind", required=True, help="address to bind the socket to")
    p.add_argument("-p", dest="port", type=int, default=8285)
    p.add_argument("-s", dest="segment", type=int, required=True, help="datagram size")
    p.add_argument("-r", dest="routes", action="append", required=True, metavar="NET/LEN=HOP")
    p.add_argument("-d", dest="duration", type=int, default=600, help="exit after seconds")
    p.add_argument("--ready", help="file written once the forwarder is ready")
    p.add_argument("--impl", default="agent")
    p.add_argument("--napi", action="store_true")
    p.add_argument("--busy-poll", type=int, default=0, metavar="US")
    p.add_argument("--sockbuf", type=int, default=0, metavar="BYTES")
    p.add_argument("--spin", action="store_true", help="poll with timeout 0")
    p.add_argument("--split", action="store_true", help="one process per direction")
    p.add_argument("--threads", action="store_true", help="one thread per direction")
    return p.parse_args()


def parse_routes(specs: list[str], port: int) -> tuple[dict[int, tuple[str, int]], int]:
    """NET/LEN=HOP specs -> ({network as int: (HOP, PORT)}, mask); one prefix length."""
    routes, mask = {}, 0
    for spec in specs:
        net, hop = spec.split("=")
        address, prefix = net.split("/")
        mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
        routes[struct.unpack("!I", socket.inet_aton(address))[0] & mask] = (hop, port)
    return routes, mask


def forward(steps: dict[int, Step], flush: Callable[[], None], *, spin: bool, seconds: int) -> int:
    """_forward_batched's loop: poll, drain each ready fd (<= 256 steps), flush; until
    SIGTERM or SECONDS. Returns how many polls it made."""
    stop: list[int] = []
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    poller = select.poll()
    for fd in steps:
        poller.register(fd, select.POLLIN)
    poll, get = poller.poll, steps.get
    timeout = 0 if spin else 1000
    deadline = time.monotonic() + seconds
    polls = 0
    while not stop and time.monotonic() < deadline:
        polls += 1
        for fd, _events in poll(timeout):
            step = get(fd)
            moved = MOVED
            for _ in range(256):
                moved = step()
                if moved != MOVED:
                    break
            if moved == FAILED:
                time.sleep(0.1)
        flush()
    return polls


def main() -> int:
    a = parse_args()
    if a.sockbuf:
        udp_offload.SOCKET_BUFFER = a.sockbuf
    tun = open_tun(a.tun, napi=a.napi)
    sock = udp_offload.open_socket(a.bind, a.port, a.segment)
    if a.busy_poll:
        sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, a.busy_poll)
    routes, mask = parse_routes(a.routes, a.port)
    tx_counters, rx_counters = [0] * 5, [0] * 5
    if a.impl == "agent":
        senders = {hop: udp_offload.open_sender(a.bind, hop, a.segment) for hop in routes.values()}
        peers = {net: senders[hop] for net, hop in routes.items()}
        tx, flush = tun_to_udp_step(
            tun, segment=a.segment, mask=mask, routes=peers, counters=tx_counters
        )
        rx = udp_to_tun_step(tun, sock, rx_counters)
    else:
        tx, rx, flush = pyloop_fast.steps(
            a.impl,
            tun=tun,
            sock=sock,
            segment=a.segment,
            mask=mask,
            routes=routes,
            txc=tx_counters,
            rxc=rx_counters,
        )
    if a.ready:
        Path(a.ready).write_text("ready\n")
    if a.threads:  # one thread per direction, as flannel's loop
        rx_thread = threading.Thread(
            target=forward, args=({sock.fileno(): rx}, lambda: None),
            kwargs={"spin": a.spin, "seconds": a.duration}, daemon=True,
        )  # fmt: skip
        rx_thread.start()
        polls = forward({tun: tx}, flush, spin=a.spin, seconds=a.duration)
    elif a.split:  # one process per direction: no GIL between them
        child = os.fork()
        if child == 0:
            polls = forward({sock.fileno(): rx}, lambda: None, spin=a.spin, seconds=a.duration)
            print(f"pyloop {a.impl} rx: rx {rx_counters} polls {polls}", file=sys.stderr)
            os._exit(0)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
        polls = forward({tun: tx}, flush, spin=a.spin, seconds=a.duration)
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
    else:
        polls = forward({tun: tx, sock.fileno(): rx}, flush, spin=a.spin, seconds=a.duration)
    print(f"pyloop {a.impl}: tx {tx_counters} rx {rx_counters} polls {polls}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
