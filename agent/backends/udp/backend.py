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

``Batching: true`` (opt-in, ours, both ends must have it; see agent/backends/udp/offload.py
and batch.py): the TUN hands over TCP super-packets of up to 64 KiB (TSO), each sent as
one UDP_SEGMENT train of MTU-sized datagrams (one 6-byte head per train, marks checked and
removed per train) and read back with UDP_GRO, so one Python iteration moves up to 45
packets' worth. TUN -> UDP runs in a thread, UDP -> TUN in a worker process
(worker.py), so the two directions do not share one GIL. Containers see the same MTU; a
Batching end still reads flannel's format, but a flannel-format end drops what a Batching end
sends.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
import time
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.backends.peers import PeerTable, gateway_routes, subnet_zero
from agent.backends.udp.batch import MIN_SEGMENT
from agent.backends.udp.forward import (
    BAD_HEADER,
    BATCH,
    BYTES,
    DROP_ERROR,
    DROP_UNKNOWN,
    PACKETS,
    REASSEMBLED,
    tun_to_udp_step,
)
from agent.backends.udp.offload import open_sender, open_socket, open_tun
from agent.backends.udp.worker import RxWorker, forward
from agent.net.netlink import SCOPE_LINK, Netlink, NetlinkError
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease

log = logging.getLogger(__name__)

DEVICE = "flannel0"
ENCAP_OVERHEAD = 28  # IPv4 + UDP headers
TXQUEUELEN = 5000
BUFFER_SIZE = 65536
RETIRE = 5.0  # seconds a removed peer's socket stays open (see _close_unused_senders)
_IPV4_DST = struct.Struct("!I")


class UdpBackend(PeerTable, Backend):
    """flannel's udp data plane: a TUN device and a user-space UDP forwarder."""

    type_name = "udp"

    @classmethod
    def device_for(cls, config: NetworkConfig) -> str:
        return DEVICE

    def __init__(self, config: NetworkConfig, iface: ExternalInterface) -> None:
        super().__init__(config, iface)
        self.port = int(config.backend.get("Port", 8285)) or 8285
        self.batching = bool(config.backend.get("Batching", False))
        self.own: Lease | None = None
        self.peers: dict[IPv4Network, Lease] = {}
        self.refused = 0
        self.mask = (0xFFFFFFFF << (32 - config.subnet_len)) & 0xFFFFFFFF
        # subnet as int -> (PublicIP, port); with Batching -> the socket connected to it
        self.next_hop: dict[int, Any] = {}
        self._senders: dict[str, socket.socket] = {}  # Batching: PublicIP -> its socket
        self._retired: list[tuple[float, socket.socket]] = []  # (since, socket) to close
        self.tx = [0, 0, 0, 0]  # TUN -> UDP
        self.rx = [0, 0, 0, 0, 0]  # UDP -> TUN
        self._tun: int | None = None
        self._sock: socket.socket | None = None
        self._wake: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker: RxWorker | None = None  # Batching: UDP -> TUN in its own process

    @property
    def mtu(self) -> int:
        return self.iface.mtu - ENCAP_OVERHEAD

    # -- lifecycle -----------------------------------------------------------------------------

    def setup(self, own: Lease) -> None:
        self.own = own
        if self.batching and self.mtu < MIN_SEGMENT:
            raise BackendError(
                f"udp: Batching needs an interface MTU of at least {MIN_SEGMENT + ENCAP_OVERHEAD}"
                f" ({self.iface.name} has {self.iface.mtu})"
            )
        if self._tun is None:
            self._tun = open_tun(DEVICE, offload=self.batching)
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
                # A host-gw run before this one left a route per peer subnet via the peer on
                # the external interface: narrower than the Network's, each would take its
                # traffic past flannel0 (seen after a day-2 switch host-gw -> udp).
                for route in gateway_routes(nl, self.iface.index, self.config.network, set()):
                    log.info("udp: removing host-gw's route to %s via %s", route.dst,
                             route.gateway)  # fmt: skip
                    nl.delete_route(route.dst, self.iface.index, route.gateway)
        except NetlinkError as exc:
            raise BackendError(f"udp: cannot configure {DEVICE}: {exc}") from exc
        if self._sock is None:
            segment = self.mtu if self.batching else None
            self._sock = open_socket(str(self.iface.address), self.port, segment)
        if not self._threads:
            self._start()

    def _start(self) -> None:
        self._stop.clear()
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.batching:
            if self._worker is None:
                self._worker = RxWorker(self._tun, self._sock)
            self._worker.start()
            self._threads = [
                threading.Thread(target=self._forward_batched, name="udp-fwd", daemon=True)
            ]
        else:
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
        if self._worker is not None:
            self._worker.stop()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def teardown(self) -> None:
        """Stop forwarding, close the socket and the TUN fd, delete flannel0."""
        self.stop()
        if self._worker is not None:
            self._worker.close()
            self._worker = None
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
        self._close_unused_senders()

    # -- peers (PeerTable hooks): the forwarding table ---------------------------------------------

    def _install(self, nl: Netlink, lease: Lease, old: Lease | None) -> None:
        address = str(lease.public_ip)
        if not self.batching:
            self.next_hop[int(lease.subnet.network_address)] = (address, self.port)
            return
        sender = self._senders.get(address)
        if sender is None:  # OSError: PeerTable refuses the lease
            sender = open_sender(str(self.iface.address), (address, self.port), self.mtu)
            self._senders[address] = sender
        self.next_hop[int(lease.subnet.network_address)] = sender
        self._close_unused_senders(time.monotonic())

    def _uninstall(self, nl: Netlink, lease: Lease) -> None:
        self.next_hop.pop(int(lease.subnet.network_address), None)
        self._close_unused_senders(time.monotonic())

    def _sweep(self, nl: Netlink, keep: dict[IPv4Network, Lease]) -> None:
        wanted = {int(s.network_address) for s in keep}
        for key in [k for k in self.next_hop if k not in wanted]:
            del self.next_hop[key]
        self._close_unused_senders(time.monotonic())

    def _close_unused_senders(self, now: float | None = None) -> None:
        """Batching: retire the sockets of peers no subnet routes to any more, and close
        those retired RETIRE seconds ago or more (NOW; None: all of them). Not at once: the
        forwarding thread may have just looked one up, and the fd number of a socket closed
        under its send() could already belong to another file."""
        used = {id(hop) for hop in self.next_hop.values()}
        for address in [a for a, s in self._senders.items() if id(s) not in used]:
            self._retired.append((time.monotonic(), self._senders.pop(address)))
        keep = []
        for retired, sock in self._retired:
            if now is None or now - retired >= RETIRE:
                sock.close()
            else:
                keep.append((retired, sock))
        self._retired = keep

    def stats(self) -> dict[str, float]:
        out = super().stats()
        rx = self.rx
        if self._worker is not None:  # what the worker received, too
            rx = [own + worker for own, worker in zip(self.rx, self._worker.counters())]
        for prefix, counters in (("tx", self.tx), ("rx", rx)):
            out[f"{prefix}_packets"] = counters[PACKETS]
            out[f"{prefix}_bytes"] = counters[BYTES]
            out[f"{prefix}_drops_error"] = counters[DROP_ERROR]
        out["tx_drops_unknown_subnet"] = self.tx[DROP_UNKNOWN]
        if self.batching:  # super-packets that came in pieces (no GRO on the way)
            out["rx_reassembled"] = rx[REASSEMBLED]
            out["rx_drops_bad_header"] = rx[BAD_HEADER]
            worker = self._worker
            out["rx_worker_restarts"] = worker.restarts if worker else 0
            out["rx_worker_handovers"] = worker.handovers if worker else 0
            out["rx_worker_active"] = int(worker.reading) if worker else 0
        return out

    # -- forwarding ------------------------------------------------------------------------------

    def _poller(self, *fds: int) -> select.poll:
        poller = select.poll()
        for fd in fds:
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

    # -- forwarding with Batching (agent/backends/udp/forward.py) ----------------------------

    def _forward_batched(self) -> None:
        """Both directions, UDP -> TUN handed to the worker process under load (see
        agent/backends/udp/worker.py)."""
        tun, sock, worker, wake = self._tun, self._sock, self._worker, self._wake
        if tun is None or sock is None or worker is None or wake is None:
            return
        tx, flush = tun_to_udp_step(
            tun,
            segment=self.mtu,
            mask=self.mask,
            routes=self.next_hop,
            counters=self.tx,
        )
        forward(
            tun,
            sock,
            worker,
            tx=tx,
            flush=flush,
            rx_counters=self.rx,
            stop=self._stop,
            wake=wake[0],
        )
