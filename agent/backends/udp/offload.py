"""TUN and socket plumbing of the udp backend, including its opt-in ``Batching`` mode.

Default (flannel's wire format): TUN ``IFF_TUN | IFF_NO_PI``, every UDP datagram's payload is
one IPv4 packet of at most the TUN MTU, nothing else.

``Batching`` (ours; both ends must have it): the TUN also gets ``IFF_VNET_HDR`` and
``TUNSETOFFLOAD`` (checksum offload, TSO, as wireguard-go does), so the kernel hands the
forwarder TCP super-packets of up to ~64 KiB, each preceded by a 10-byte ``virtio_net_hdr``
(little endian, forced with ``TUNSETVNETLE`` on big-endian hosts) that says how to segment
it and where its checksum goes; the socket gets ``UDP_GRO`` and sends with ``UDP_SEGMENT``.
The framing of a super-packet into MTU-sized datagrams is in agent/backends/udp/batch.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct

from agent.backends.base import BackendError

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETLE = 0x400454DC
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN

VNET_HDR_LEN = 10  # struct virtio_net_hdr (no num_buffers)
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103  # linux/udp.h (Python 3.11's socket module lacks both)
UDP_GRO = 104

SOCKET_BUFFER = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def open_tun(name: str, offload: bool = False) -> int:
    """A non-blocking fd on TUN NAME (IFF_TUN | IFF_NO_PI), created or re-attached.

    With OFFLOAD also IFF_VNET_HDR, little-endian headers and TSO/checksum offload. The device
    is made persistent: it keeps its address and routes while the agent restarts (like the
    other backends' kernel state); ``teardown`` deletes it.
    """
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
        if offload:
            with contextlib.suppress(OSError):  # big-endian hosts only; LE is native elsewhere
                fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
        # Also without: a persistent device may keep TSO from a Batching run before, and
        # would then hand a plain reader super-packets.
        fcntl.ioctl(fd, TUNSETOFFLOAD, OFFLOADS if offload else 0)
    except OSError as exc:
        os.close(fd)
        hint = " (another process holds it)" if exc.errno == errno.EBUSY else ""
        raise BackendError(f"udp: cannot open TUN device {name}: {exc.strerror}{hint}") from exc
    return fd


def _set_buffer(sock: socket.socket, force: int, plain: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)  # beyond rmem_max (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def _set_buffers(sock: socket.socket) -> None:
    _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF)
    _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF)


def _set_segment(sock: socket.socket, segment: int, gro: bool) -> None:
    """Send in datagrams of SEGMENT bytes; with GRO also read trains whole (OSError before
    Linux 5.0)."""
    sock.setsockopt(SOL_UDP, UDP_GRO, int(gro))
    sock.setsockopt(SOL_UDP, UDP_SEGMENT, segment)


def open_socket(address: str, port: int, segment: int | None = None) -> socket.socket:
    """The non-blocking UDP socket bound to ADDRESS:PORT, with large buffers.

    With SEGMENT (Batching) it reads UDP GRO trains and splits what it sends into datagrams
    of SEGMENT bytes (UDP_SEGMENT as a socket option: sendto() then needs no per-call cmsg,
    which measured ~8 us less per call than sendmsg(); datagrams up to SEGMENT bytes long are
    sent as they are).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _set_buffers(sock)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise BackendError(f"udp: cannot bind {address}:{port}: {exc.strerror}") from exc
    if segment is not None:
        try:
            _set_segment(sock, segment, gro=True)
        except OSError as exc:
            sock.close()
            raise BackendError(
                f"udp: Batching needs UDP GSO and GRO (Linux 5.0 or later): {exc.strerror}"
            ) from exc
    sock.setblocking(False)
    return sock


def open_sender(address: str, peer: tuple[str, int], segment: int) -> socket.socket:
    """Batching: a non-blocking UDP socket from ADDRESS (any port) connect()ed to PEER, that
    sends in datagrams of SEGMENT bytes. One per peer: send() instead of sendto() leaves
    the kernel its cached route and Python no address to parse on every train (the peer's
    replies still arrive on the bound socket; its port is the only one peers send to).
    OSError if it cannot be made."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _set_buffers(sock)
        _set_segment(sock, segment, gro=False)  # it receives nothing but ICMP errors
        sock.bind((address, 0))
        sock.connect(peer)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
