"""Time-stamp route additions in many network namespaces at once, without spawning `ip`.

One rtnetlink socket per lab namespace, created inside it (setns of the calling thread only,
then back) and subscribed to the IPv4 route multicast group; ``select`` over all of them stamps
each RTM_NEWROUTE with the monotonic clock when it arrives (a thread reads them all the time,
so a stamp is never later than the read). Polling 100 route tables with `ip`
would take longer than the latency being measured. Nothing is configured anywhere: the sockets
only listen.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import struct
import threading
import time
from ipaddress import IPv4Network

CLONE_NEWNET = 0x40000000
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE = 24
RTA_DST = 1
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RTA = struct.Struct("=HH")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def route_socket(netns_path: str) -> socket.socket:
    """A listening rtnetlink socket (IPv4 route events) inside the namespace at NETNS_PATH."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_IPV4_ROUTE))
        finally:
            _setns(own)  # always back to our own namespace
    finally:
        os.close(target)
        os.close(own)
    sock.setblocking(False)
    return sock


def new_routes(data: bytes) -> list[IPv4Network]:
    """Destinations of the RTM_NEWROUTE messages in one netlink datagram."""
    found: list[IPv4Network] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        if kind == RTM_NEWROUTE:
            body = offset + _NLMSG.size
            family, dst_len = _RTMSG.unpack_from(data, body)[:2]
            attr = body + _RTMSG.size
            end = offset + length
            while family == socket.AF_INET and attr + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, attr)
                if alen < _RTA.size:
                    break
                if atype == RTA_DST and alen >= _RTA.size + 4:
                    raw = data[attr + _RTA.size : attr + _RTA.size + 4]
                    found.append(IPv4Network((socket.inet_ntoa(raw), dst_len)))
                attr += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return found


class RouteWatch:
    """Route additions per host name, time-stamped; use as a context manager."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.socks: dict[int, tuple[str, socket.socket]] = {}
        self.events: list[tuple[str, IPv4Network, float]] = []  # (host, dst, monotonic)
        self._stop = threading.Event()
        try:
            for name, ns in namespaces.items():
                sock = route_socket(f"/run/netns/{ns}")
                self.socks[sock.fileno()] = (name, sock)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._pump, name="route-watch", daemon=True)
        self._thread.start()

    def first_seen(self, dst: IPv4Network) -> dict[str, float]:
        """Host -> when a route to DST was first added there."""
        seen: dict[str, float] = {}
        for host, net, at in list(self.events):
            if net == dst and host not in seen:
                seen[host] = at
        return seen

    def _pump(self) -> None:
        """Read every socket until stopped (the thread)."""
        socks = dict(self.socks)
        while not self._stop.is_set():
            ready, _, _ = select.select(list(socks), [], [], 0.1)
            now = time.monotonic()
            for fd in ready:
                name, sock = socks[fd]
                for _ in range(1000):  # drain, bounded
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, OSError):
                        break
                    self.events.extend((name, dst, now) for dst in new_routes(data))

    def wait_all(self, dst: IPv4Network, hosts: set[str], timeout: float) -> dict[str, float]:
        """Wait until every host in HOSTS saw DST or TIMEOUT passed; host -> time seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not hosts <= set(self.first_seen(dst)):
            time.sleep(0.05)
        return self.first_seen(dst)

    def close(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=5)
        for _, sock in self.socks.values():
            with contextlib.suppress(OSError):
                sock.close()
        self.socks = {}

    def __enter__(self) -> RouteWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
