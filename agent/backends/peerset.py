"""Which PublicIPs the peers-only chain lets in: those of the leases the backend accepted.

:class:`PeerSetSink` sits between the subnet watch and the backend's sink: it passes every
call on and, after each, reports the set of PublicIPs of the leases the backend took (a
lease the backend refused, e.g. of another backend type, is left out; so is one the
allow-list refused, which never reaches this sink). The set is reported only when it
changed, so a lease event that moves no PublicIP costs no iptables call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Address

from agent.subnet.layout import Lease
from agent.subnet.watch import PeerSink


class PeerSetSink(PeerSink):
    """Forwards to INNER; calls ON_CHANGE(frozenset of PublicIPs) when the accepted set moves."""

    def __init__(self, inner: PeerSink, on_change: Callable[[frozenset[IPv4Address]], object]):
        self.inner = inner
        self.on_change = on_change
        self.accepted: dict[str, Lease] = {}  # by key (or subnet when a lease has no key)
        self._reported: frozenset[IPv4Address] | None = None

    @staticmethod
    def _key(lease: Lease) -> str:
        return lease.key or str(lease.subnet)

    def _report(self) -> None:
        ips = frozenset(x.public_ip for x in self.accepted.values())
        if ips != self._reported:
            self._reported = ips
            self.on_change(ips)

    def add_peer(self, lease: Lease) -> None:
        try:
            self.inner.add_peer(lease)
            self.accepted[self._key(lease)] = lease
        except Exception:
            self.accepted.pop(self._key(lease), None)
            raise

    def remove_peer(self, lease: Lease) -> None:
        self.accepted.pop(self._key(lease), None)
        self.inner.remove_peer(lease)

    def replace_peer(self, old: Lease, new: Lease) -> None:
        self.accepted.pop(self._key(old), None)
        self.inner.replace_peer(old, new)
        self.accepted[self._key(new)] = new

    def flush(self) -> None:
        """The end of a batch: report the set if it moved."""
        self.inner.flush()
        self._report()

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        """The backend logs and skips the leases it refuses: ask it which it kept, when it
        can tell (PeerTable's ``peers``), else take them all."""
        try:
            self.inner.sync_peers(leases)
        finally:
            kept = getattr(getattr(self.inner, "backend", self.inner), "peers", None)
            subnets = set(kept) if isinstance(kept, dict) else None
            self.accepted = {
                self._key(x): x for x in leases if subnets is None or x.subnet in subnets
            }
            self._report()
