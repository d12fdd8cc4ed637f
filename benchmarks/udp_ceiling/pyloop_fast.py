"""Experimental Python forwarding steps for pyloop.py (copies; agent/ is not changed). A study
tool for issue #8 (see README.md), not part of overlayctl or of CI. Each builder returns
closures that bind everything they use to local names: the hot loop does no attribute look-ups.

- ``flat``: an experiment on the wire format, to find the floor of a Python loop: NO per
  datagram header. TUN -> UDP is ``readv(tun, [one buffer])`` + ``sendto`` (UDP_SEGMENT cuts
  it), UDP -> TUN is ``recvmsg_into`` + ``os.write`` per super-packet, found by the IPv4 total
  length after the virtio_net_hdr; a super-packet split over two reads (longer than 65507 or a
  GRO flush) is completed by receiving the rest right behind it (no copy). Not robust to loss
  inside a train (a length mismatch drops it) - an upper bound, not a proposal as is.
- ``train`` / ``train-acks`` / ``train-connected``: one 2-byte header per train, see
  train_steps().
"""

from __future__ import annotations

import gc
import os
import struct

from agent.backends.udp.batch import MAX_TRAIN
from agent.backends.udp.forward import EMPTY, FAILED, MOVED, _SmallTrains
from agent.backends.udp.offload import VNET_HDR_LEN, open_sender

_DST = struct.Struct("!I")
_TOTLEN = struct.Struct("!H")


def steps(impl, *, tun, sock, segment, mask, routes, txc, rxc):
    """The (tx, rx, flush) steps of IMPL on TUN (fd) and SOCK; ROUTES maps a destination
    network (address & MASK, as an int) to a (host, port) hop; TXC / RXC are the counters."""
    if impl == "flat":
        tx, flush = _flat_tx(tun, sock, segment=segment, mask=mask, routes=routes, counters=txc)
        return tx, _flat_rx(tun, sock, rxc), flush
    train = {"mask": mask, "routes": routes, "txc": txc, "rxc": rxc}  # UDP_SEGMENT: on sock
    if impl == "train":
        return train_steps(tun, sock, **train)
    if impl == "train-connected":  # the socket connect()ed to the (only) peer: send(), no
        # address to parse in Python, the route cached in the socket (two hosts only)
        (hop,) = set(routes.values())
        sock.connect(hop)
        return train_steps(tun, sock, **train, connected=True)
    if impl == "train-acks":  # + ACK trains, and no cyclic garbage collector
        gc.disable()
        return train_steps(tun, sock, **train, acks=segment)
    raise SystemExit(f"unknown impl {impl}")


def _flat_tx(tun, sock, *, segment, mask, routes, counters):
    """TUN -> UDP without any header: the super-packet as it is, UDP_SEGMENT cuts it."""
    buf = bytearray(VNET_HDR_LEN + 65536)
    view = memoryview(buf)
    bufs = [buf]
    split = MAX_TRAIN // segment * segment
    readv, sendto, unpack = os.readv, sock.sendto, _DST.unpack_from
    dst = VNET_HDR_LEN + 16

    def step() -> int:
        try:
            size = readv(tun, bufs)
        except BlockingIOError:
            return EMPTY
        except OSError:
            return FAILED
        hop = routes.get(unpack(buf, dst)[0] & mask)
        if hop is None:
            return MOVED
        counters[0] += 1
        try:
            if size <= MAX_TRAIN:
                sendto(view[:size], hop)
            else:
                sendto(view[:split], hop)
                sendto(view[split:size], hop)
        except OSError:
            counters[3] += 1
        return MOVED

    return step, lambda: None


def _flat_rx(tun, sock, counters):
    """UDP -> TUN without any header: super-packets found by their IPv4 total length."""
    buf = bytearray(2 * 65536 + 1024)
    view = memoryview(buf)
    recv_into, write, totlen = sock.recv_into, os.write, _TOTLEN.unpack_from
    have = [0]  # bytes of an unfinished super-packet at buf[0:]
    limit = 65536 + VNET_HDR_LEN

    def step() -> int:
        start = have[0]
        try:
            size = recv_into(view[start:])
        except BlockingIOError:
            return EMPTY
        except OSError:
            return MOVED
        end, at = start + size, 0
        while end - at > VNET_HDR_LEN + 4:
            length = VNET_HDR_LEN + totlen(buf, at + VNET_HDR_LEN + 2)[0]
            if buf[at + VNET_HDR_LEN] >> 4 != 4 or length > limit:
                counters[3] += 1
                have[0] = 0
                return MOVED
            if at + length > end:
                break
            write(tun, view[at : at + length])
            counters[0] += 1
            at += length
        if at < end:  # unfinished: keep it at the front (rare: a copy), receive behind it
            if at:
                buf[: end - at] = buf[at:end]
            have[0] = end - at
        else:
            have[0] = 0
        return MOVED

    return step


# -- ``train``: one 2-byte header per UDP_SEGMENT train instead of one per datagram ---------------
#
# TUN -> UDP: ``readv(tun, [buffer after a 2-byte header])`` (one iovec), header byte 0 =
# 0xF0 | id (3 bits, cycling), byte 1 = 0 (part), ``sendto`` of header + super-packet.
# UDP -> TUN: a read holds one or more whole trains (GRO only merges equal-size datagrams, so
# trains that follow each other in one read are ACK-sized or end on a datagram boundary); each
# train's length is known from the IPv4 total length after its virtio_net_hdr, so it is
# checked exactly; a train that is not complete in its read (loss, or a GRO flush in the
# middle) is dropped and counted - never assembled from unverifiable pieces. Super-packets
# longer than 65507 - 2 bytes would need a second train (part 1): dropped and counted here
# (none occur with MTU 1500: TSO makes at most 45 x MSS 1432 + headers = 64502 bytes).

TRAIN_HDR = 2


def train_steps(tun, sock, *, mask, routes, txc, rxc, acks=0, connected=False):
    """The ``train`` format's (tx, rx, flush). ACKS (the segment size, if not 0):
    single-datagram trains of <= 128 bytes (TCP ACKs) wait and leave as one UDP GSO train
    on a socket connect()ed to the peer, as the agent's _SmallTrains does (the receiver's
    parse loop reads them back). CONNECTED: SOCK is connect()ed, use send()."""
    small = _SmallTrains(txc)
    local = sock.getsockname()[0]
    senders = {hop: open_sender(local, hop, acks) for hop in set(routes.values())} if acks else {}
    tx = _train_tx(
        tun,
        sock,
        mask=mask,
        routes=routes,
        counters=txc,
        small=small if acks else None,
        senders=senders,
        connected=connected,
    )
    return tx, _train_rx(tun, sock, rxc), (small.flush if acks else lambda: None)


def _train_tx(tun, sock, *, mask, routes, counters, small, senders, connected):
    """TUN -> UDP: one header, the super-packet read right behind it, one sendto (send if
    CONNECTED); small ones go to SMALL (a _SmallTrains, on the hop's socket in SENDERS)
    unless it is None."""
    acks = small is not None
    add_small, flush = (small.add, small.flush) if acks else (None, None)
    tbuf = bytearray(TRAIN_HDR + VNET_HDR_LEN + 65536)
    tview = memoryview(tbuf)
    tbufs = [tview[TRAIN_HDR:]]
    readv, sendto, send, unpack = os.readv, sock.sendto, sock.send, _DST.unpack_from
    dst = TRAIN_HDR + VNET_HDR_LEN + 16
    limit = MAX_TRAIN
    ident = [0]

    def tx() -> int:
        try:
            size = readv(tun, tbufs)
        except BlockingIOError:
            if acks:
                flush()
            return EMPTY
        except OSError:
            return FAILED
        hop = routes.get(unpack(tbuf, dst)[0] & mask)
        if hop is None or size + TRAIN_HDR > limit:
            counters[3] += 1
            return MOVED
        i = ident[0] = (ident[0] + 1) & 7
        tbuf[0] = 0xF0 | i
        counters[0] += 1
        if acks:
            if size <= 126:
                add_small(senders[hop], tview[: TRAIN_HDR + size])
                return MOVED
            flush()
        try:
            if connected:
                send(tview[: TRAIN_HDR + size])
            else:
                sendto(tview[: TRAIN_HDR + size], hop)
        except OSError:
            counters[3] += 1
        return MOVED

    return tx


def _train_rx(tun, sock, counters):
    """UDP -> TUN: every whole train of a read written with one os.write; a train that is
    not complete in its read is dropped and counted."""
    rbuf = bytearray(65536 + 64)
    rview = memoryview(rbuf)
    recv_into, write, totlen = sock.recv_into, os.write, _TOTLEN.unpack_from
    off = TRAIN_HDR + VNET_HDR_LEN
    ipv4 = off  # where the IPv4 header starts in a train

    def rx() -> int:
        try:
            size = recv_into(rview)
        except BlockingIOError:
            return EMPTY
        except OSError:
            return MOVED
        at = 0
        while size - at > off + 4:
            if rbuf[at] >> 4 != 0xF or rbuf[at + 1] or rbuf[at + ipv4] >> 4 != 4:
                counters[3] += 1
                return MOVED
            end = at + off + totlen(rbuf, at + ipv4 + 2)[0]
            if end > size:
                counters[3] += 1  # incomplete train: dropped (TCP resends)
                return MOVED
            write(tun, rview[at + TRAIN_HDR : end])
            counters[0] += 1
            at = end
        if at != size:
            counters[3] += 1
        return MOVED

    return rx
