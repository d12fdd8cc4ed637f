"""The kernel's own word on where packets died: lines of a tracefs instance's `trace` with the
skb:kfree_skb event (Linux 5.17+), as doctor_probe.py read them on a host, parsed here (pure).

A line looks like (6.x; 5.17-5.x lack rx_sk and print LOCATION as an address, not a symbol):

    <idle>-0 [001] ..s1. 602.48: kfree_skb: skbaddr=0000000049b13593 rx_sk=0000000000000000
        protocol=2048 location=nf_hook_slow+0x9f/0xc0 reason: NETFILTER_DROP

tracefs is kernel-wide: on hosts sharing one kernel (a lab under systemd-nspawn, network
namespaces) every host's trace holds every host's drops, which is why evidence says "kernel".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(
    r"\bkfree_skb:.*?\bprotocol=(?P<protocol>\d+)\s+location=(?P<location>\S+)"
    r"\s+reason:\s*(?P<reason>[A-Z0-9_]+)\s*$"
)
# Drops every host makes all the time that say nothing about the overlay: an echo reply no
# ping socket wanted (doctor's own raw socket took it), or a reason the kernel does not give.
_NOISE = {("NO_SOCKET", "ping_rcv"), ("NOT_SPECIFIED", "")}


@dataclass(frozen=True)
class Drop:
    """COUNT packets of PROTOCOL (ethertype) freed with REASON at LOCATION (a function, or an
    address on kernels that print no symbol)."""

    reason: str
    location: str
    protocol: int
    count: int

    def __str__(self) -> str:
        return f"{self.reason} at {self.location} x{self.count}"


def _function(location: str) -> str:
    """`nf_hook_slow+0x9f/0xc0` -> `nf_hook_slow`; an address stays as it is."""
    return location.split("+", 1)[0]


def parse_trace(lines: Iterable[str]) -> list[Drop]:
    """Drops per (reason, location, protocol), most first; lines that are not kfree_skb
    events (headers, other events, torn lines) and noise are skipped."""
    counts: Counter[tuple[str, str, int]] = Counter()
    for line in lines:
        found = _LINE.search(line) if isinstance(line, str) else None
        if found is None:
            continue
        reason, where = found["reason"], _function(found["location"])
        if (reason, where) in _NOISE or (reason, "") in _NOISE:
            continue
        counts[(reason, where, int(found["protocol"]))] += 1
    return [Drop(r, loc, p, n) for (r, loc, p), n in
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]  # fmt: skip


def summary(drops: list[Drop], limit: int = 3) -> str:
    """`NETFILTER_DROP at nf_hook_slow x3, UDP_CSUM at __udp4_lib_rcv x1` (the LIMIT most)."""
    return ", ".join(str(d) for d in drops[:limit])
