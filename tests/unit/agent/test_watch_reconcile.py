"""The watch loop's reconcile and event logic, without etcd (the client is never called)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network

from agent.etcd import KeyValue, WatchEvent
from agent.subnet.layout import Lease, decode_lease, encode_lease_value, subnet_key
from agent.subnet.watch import Backoff, PeerSink, SubnetWatcher

PREFIX = "/coreos.com/network"


class Sink(PeerSink):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        self.calls.append(("sync", ",".join(str(x.subnet) for x in leases)))

    def add_peer(self, lease: Lease) -> None:
        self.calls.append(("add", str(lease.subnet)))

    def remove_peer(self, lease: Lease) -> None:
        self.calls.append(("remove", str(lease.subnet)))


def kv(subnet: str, ip: str, rev: int, value: bytes | None = None) -> KeyValue:
    raw = value if value is not None else encode_lease_value(ip, "udp", None)
    return KeyValue(subnet_key(PREFIX, IPv4Network(subnet)), raw, rev, rev, 1, 0)


def watcher(sink: Sink) -> SubnetWatcher:
    return SubnetWatcher(None, PREFIX, sink, lambda: IPv4Network("10.1.1.0/24"))  # type: ignore[arg-type]


def test_events_add_replace_remove_and_skip_own() -> None:
    sink = Sink()
    w = watcher(sink)
    w.apply(
        [
            WatchEvent("put", kv("10.1.2.0/24", "1.1.1.2", 5)),
            WatchEvent("put", kv("10.1.1.0/24", "1.1.1.1", 6)),
            WatchEvent("put", kv("10.1.2.0/24", "1.1.1.2", 7)),  # same attributes: nothing
            WatchEvent("put", kv("10.1.2.0/24", "1.1.1.9", 8)),  # PublicIP changed
            WatchEvent("put", kv("10.1.2.0/24", "", 9, b"junk")),  # kept, not removed
            WatchEvent("delete", kv("10.1.2.0/24", "", 10, b"")),
            WatchEvent("delete", kv("10.1.7.0/24", "", 11, b"")),  # unknown: nothing
        ]
    )
    assert sink.calls == [
        ("add", "10.1.2.0/24"),
        ("remove", "10.1.2.0/24"),  # default replace_peer = remove + add
        ("add", "10.1.2.0/24"),
        ("remove", "10.1.2.0/24"),
    ]
    assert w.revision == 11


def test_reconcile_emits_only_the_difference() -> None:
    sink = Sink()
    w = watcher(sink)
    w.apply(
        [
            WatchEvent("put", kv(s, f"1.1.{i}.1", i))
            for i, s in enumerate(["10.1.2.0/24", "10.1.3.0/24"])
        ]
    )
    sink.calls.clear()
    desired = [
        decode_lease(x.key, x.value)
        for x in (kv("10.1.3.0/24", "1.1.1.1", 1), kv("10.1.4.0/24", "1.1.4.1", 2))
    ]
    w.reconcile(desired)
    assert sink.calls == [("remove", "10.1.2.0/24"), ("add", "10.1.4.0/24")]


def test_backoff_is_bounded() -> None:
    b = Backoff(0.1, 1.0)
    delays = [b.next() for _ in range(8)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and max(delays) == 1.0
    b.reset()
    assert b.next() == 0.1
