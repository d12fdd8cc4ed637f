"""The udp backend (the seed's): TUN ``flannel0`` and user-space forwarding, flannel's wire format.

The device gets ``<subnet>.0/<Network prefix>`` (the seed shows ``inet 172.21.31.0/16 scope
global flannel0``), MTU = interface MTU - 28 and a long transmit queue. A UDP socket bound to
the interface address on port 8285 (config ``Port``) carries each IPv4 packet as the whole
payload, nothing else, exactly like flanneld, so both interoperate.

Two forwarding threads, one per direction, each draining its non-blocking source until EAGAIN
into one preallocated buffer, then sleeping in poll() on the source and a wake-up pipe:
TUN -> the destination's subnet (integer mask, one dict lookup) -> sendto(PublicIP, port);
socket -> write to the TUN. Packets for subnets without a lease are dropped and counted.
Nothing is logged or allocated per packet beyond the small objects Python itself creates.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from ipaddress import IPv4Interface, IPv4Network

from pyroute2.netlink.exceptions import NetlinkError

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.config import NetworkConfig
from agent.netlink import SCOPE_LINK, Netlink, PeerTable, subnet_zero
from agent.subnets import Lease

log = logging.getLogger(__name__)

DEVICE = "flannel0"
ENCAP_OVERHEAD = 28  # IPv4 + UDP headers
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TXQUEUELEN = 5000
SOCKET_BUFFER = 8 << 20
BUFFER_SIZE = 65536
BATCH = 256  # packets per drain round before the stop flag is looked at again
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_IPV4_DST = struct.Struct("!I")
# Counter slots (one list per direction, written only by its own thread).
PACKETS, BYTES, DROP_UNKNOWN, DROP_ERROR = range(4)


def open_tun(name: str) -> int:
    """A non-blocking fd on TUN NAME (IFF_TUN | IFF_NO_PI), created or re-attached.

    The device is made persistent: it keeps its address and routes while the agent restarts
    (like the other backends' kernel state); ``teardown`` deletes it.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
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


class UdpBackend(PeerTable, Backend):
    """flannel's udp data plane: a TUN device and a user-space UDP forwarder."""

    type_name = "udp"

    def __init__(self, config: NetworkConfig, iface: ExternalInterface) -> None:
        super().__init__(config, iface)
        self.port = int(config.backend.get("Port", 8285)) or 8285
        self.own: Lease | None = None
        self.peers: dict[IPv4Network, Lease] = {}
        self.refused = 0
        self.mask = (0xFFFFFFFF << (32 - config.subnet_len)) & 0xFFFFFFFF
        self.next_hop: dict[int, tuple[str, int]] = {}  # subnet as int -> (PublicIP, port)
        self.tx = [0, 0, 0, 0]  # TUN -> UDP
        self.rx = [0, 0, 0, 0]  # UDP -> TUN
        self._tun: int | None = None
        self._sock: socket.socket | None = None
        self._wake: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def mtu(self) -> int:
        return self.iface.mtu - ENCAP_OVERHEAD

    # -- lifecycle -----------------------------------------------------------------------------

    def setup(self, own: Lease) -> None:
        self.own = own
        if self._tun is None:
            self._tun = open_tun(DEVICE)
        address = IPv4Interface(f"{subnet_zero(own.subnet)}/{self.config.network.prefixlen}")
        try:
            with Netlink() as nl:
                index = nl.link_index(DEVICE)
                if index is None:
                    raise BackendError(f"udp: {DEVICE} vanished after it was opened")
                nl.set_link(index, mtu=self.mtu, txqlen=TXQUEUELEN)
                nl.ensure_only_address(index, address)
                # Explicitly, in case another route (docker's) kept the kernel from adding it.
                nl.replace_route(self.config.network, index, scope=SCOPE_LINK)
        except NetlinkError as exc:
            raise BackendError(f"udp: cannot configure {DEVICE}: {exc}") from exc
        if self._sock is None:
            self._sock = self._open_socket()
        if not self._threads:
            self._start()

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF)
            _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF)
            sock.bind((str(self.iface.address), self.port))
        except OSError as exc:
            sock.close()
            raise BackendError(
                f"udp: cannot bind {self.iface.address}:{self.port}: {exc.strerror}"
            ) from exc
        sock.setblocking(False)
        return sock

    def _start(self) -> None:
        self._stop.clear()
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._threads = [
            threading.Thread(target=self._tun_to_udp, name="udp-tx", daemon=True),
            threading.Thread(target=self._udp_to_tun, name="udp-rx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the forwarding threads (the device and socket stay)."""
        self._stop.set()
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def teardown(self) -> None:
        """Stop forwarding, close the socket and the TUN fd, delete flannel0."""
        self.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tun is not None:
            os.close(self._tun)
            self._tun = None
        with Netlink() as nl:
            nl.delete_link(DEVICE)  # persistent: it stays until deleted
        self.peers.clear()
        self.next_hop.clear()

    # -- peers (PeerTable hooks): the forwarding table ---------------------------------------------

    def _install(self, nl: Netlink, lease: Lease, old: Lease | None) -> None:
        self.next_hop[int(lease.subnet.network_address)] = (str(lease.public_ip), self.port)

    def _uninstall(self, nl: Netlink, lease: Lease) -> None:
        self.next_hop.pop(int(lease.subnet.network_address), None)

    def _sweep(self, nl: Netlink, keep: dict[IPv4Network, Lease]) -> None:
        wanted = {int(s.network_address) for s in keep}
        for key in [k for k in self.next_hop if k not in wanted]:
            del self.next_hop[key]

    def stats(self) -> dict[str, float]:
        out = super().stats()
        for prefix, counters in (("tx", self.tx), ("rx", self.rx)):
            out[f"{prefix}_packets"] = counters[PACKETS]
            out[f"{prefix}_bytes"] = counters[BYTES]
            out[f"{prefix}_drops_error"] = counters[DROP_ERROR]
        out["tx_drops_unknown_subnet"] = self.tx[DROP_UNKNOWN]
        return out

    # -- forwarding ------------------------------------------------------------------------------

    def _poller(self, fd: int) -> select.poll:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if self._wake is not None:
            poller.register(self._wake[0], select.POLLIN)
        return poller

    def _tun_to_udp(self) -> None:
        """TUN -> UDP: one IPv4 packet per datagram, to the PublicIP of the dst's subnet."""
        tun, sock = self._tun, self._sock
        if tun is None or sock is None:
            return
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        bufs = [buf]
        readv, sendto, unpack = os.readv, sock.sendto, _IPV4_DST.unpack_from
        mask, routes, counters, stop = self.mask, self.next_hop, self.tx, self._stop
        poll = self._poller(tun).poll
        while not stop.is_set():
            packets = nbytes = unknown = errors = 0
            for _ in range(BATCH):
                try:
                    size = readv(tun, bufs)
                except BlockingIOError:
                    poll(1000)
                    break
                except OSError:
                    errors += 1
                    poll(100)
                    break
                if size < 20 or buf[0] >> 4 != 4:
                    errors += 1
                    continue
                hop = routes.get(unpack(buf, 16)[0] & mask)
                if hop is None:
                    unknown += 1
                    continue
                try:
                    sendto(view[:size], hop)
                except OSError:  # socket buffer full or peer unreachable: a lost packet
                    errors += 1
                    continue
                packets += 1
                nbytes += size
            counters[PACKETS] += packets
            counters[BYTES] += nbytes
            counters[DROP_UNKNOWN] += unknown
            counters[DROP_ERROR] += errors

    def _udp_to_tun(self) -> None:
        """UDP -> TUN: each datagram's payload is an IPv4 packet for a local container."""
        tun, sock = self._tun, self._sock
        if tun is None or sock is None:
            return
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        recv_into, write = sock.recv_into, os.write
        counters, stop = self.rx, self._stop
        poll = self._poller(sock.fileno()).poll
        while not stop.is_set():
            packets = nbytes = errors = 0
            for _ in range(BATCH):
                try:
                    size = recv_into(buf)
                except BlockingIOError:
                    poll(1000)
                    break
                except OSError:
                    errors += 1
                    continue
                if size < 20 or buf[0] >> 4 != 4:
                    errors += 1
                    continue
                try:
                    write(tun, view[:size])
                except OSError:
                    errors += 1
                    continue
                packets += 1
                nbytes += size
            counters[PACKETS] += packets
            counters[BYTES] += nbytes
            counters[DROP_ERROR] += errors
