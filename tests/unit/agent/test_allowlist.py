"""The admin's allow-list of PublicIPs: parsing, judging, and the watch loop that applies it
(no etcd: a stand-in client answers the single-key GET and the start snapshot)."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.etcd import EtcdUnavailable, KeyRange, KeyValue, WatchEvent
from agent.subnet.allowlist import AllowList, AllowListError, allowlist_key, parse_allowlist
from agent.subnet.layout import Lease, subnet_key
from agent.subnet.watch import SubnetWatcher
from tests.unit.agent.test_watch_reconcile import PREFIX, Sink, kv

OWN = IPv4Address("1.1.1.1")


class Client:
    """Answers get(<prefix>/allowed-public-ips) with what the test put there."""

    def __init__(self) -> None:
        self.value: KeyValue | None = None
        self.gets = 0
        self.snapshots = 0
        self.fail = False

    def set(self, ips: list[str] | None, rev: int) -> None:
        value = json.dumps({"PublicIPs": ips}).encode()
        self.value = None if ips is None else KeyValue(allowlist_key(PREFIX), value, 1, rev, 1, 0)

    def get(self, key: str) -> KeyValue | None:
        assert key == allowlist_key(PREFIX)
        self.gets += 1
        if self.fail:
            raise EtcdUnavailable("down")
        return self.value

    def get_ranges(self, ranges: list[KeyRange]) -> tuple[list[list[KeyValue]], int]:
        """The start snapshot: config (none), the allow-list, the leases of subnets()."""
        self.snapshots += 1
        return [[], [self.value] if self.value else [], self.subnets()], 9

    def subnets(self) -> list[KeyValue]:
        return []


def refresh(w: SubnetWatcher, client: Client) -> bool:
    assert w.allowlist is not None
    return w.allowlist.refresh(client)  # type: ignore[arg-type]


def watcher(client: Client, sink: Sink) -> SubnetWatcher:
    return SubnetWatcher(
        client,  # type: ignore[arg-type]
        PREFIX,
        sink,
        lambda: IPv4Network("10.1.1.0/24"),
        own_public_ip=OWN,
        allowlist=AllowList(PREFIX, OWN),
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"{", "not JSON"),
        (b"[]", "expected"),
        (b'{"PublicIPs": "1.2.3.4"}', "expected"),
        (b'{"PublicIPs": ["1.2.3.4", 5]}', "5 is not an IPv4"),
        (b'{"PublicIPs": ["::1"]}', "'::1' is not an IPv4"),
        (b'{"PublicIPs": ["1.2.3.4/24"]}', "is not an IPv4"),
        (b"\xff", "not JSON"),
    ],
)
def test_bad_values_name_the_problem(value: bytes, error: str) -> None:
    with pytest.raises(AllowListError, match=error):
        parse_allowlist(value)


def test_parse_and_key() -> None:
    assert allowlist_key("/coreos.com/network/") == "/coreos.com/network/allowed-public-ips"
    ips = parse_allowlist('{"PublicIPs": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]}')
    assert ips == {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")}
    assert parse_allowlist('{"PublicIPs": []}') == frozenset()


def test_refresh_keeps_the_list_on_errors_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    client, allow = Client(), AllowList(PREFIX, OWN)
    assert not allow.refresh(client)  # type: ignore[arg-type]  # absent -> absent
    assert allow.ips is None
    client.set(["1.1.1.2"], 5)
    with caplog.at_level(logging.ERROR):
        assert allow.refresh(client)  # type: ignore[arg-type]
    assert "our own PublicIP 1.1.1.1 is not in" in caplog.text  # inventory wrong: ERROR
    client.value = KeyValue(allowlist_key(PREFIX), b"junk", 1, 6, 1, 0)
    assert not allow.refresh(client) and allow.ips == {IPv4Address("1.1.1.2")}  # type: ignore[arg-type]
    client.fail = True
    assert not allow.refresh(client) and allow.errors == 2  # type: ignore[arg-type]
    stranger = Lease(IPv4Network("10.1.9.0/24"), IPv4Address("192.168.255.10"), "udp", key="k")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not allow.judge(stranger) and not allow.judge(stranger)
    assert caplog.text.count("ignoring lease 10.1.9.0/24") == 1


def test_watcher_refuses_then_admits_when_the_list_changes() -> None:
    client, sink = Client(), Sink()
    client.set(["1.1.1.1", "1.1.2.1"], 3)
    w = watcher(client, sink)
    w.apply([])
    refresh(w, client)
    w.apply(
        [
            WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5)),
            WatchEvent("put", kv("10.1.200.0/24", "192.168.255.10", 6)),  # outside
        ]
    )
    assert sink.calls == [("add", "10.1.2.0/24")]
    assert [str(x.subnet) for x in w.refused] == ["10.1.200.0/24"]
    # The admin adds the address: the refused lease is programmed, nothing else moves.
    client.set(["1.1.1.1", "1.1.2.1", "192.168.255.10"], 7)
    assert refresh(w, client)
    w.reconcile(w._admitted())
    assert sink.calls[1:] == [("add", "10.1.200.0/24")] and w.refused == []
    # ... removes it again: it goes; the key deleted: every lease is accepted again.
    client.set(["1.1.1.1", "1.1.2.1"], 8)
    assert refresh(w, client)
    w.reconcile(w._admitted())
    assert sink.calls[2:] == [("remove", "10.1.200.0/24")]
    client.set(None, 0)
    assert refresh(w, client) and w.allowlist is not None and w.allowlist.ips is None
    w.reconcile(w._admitted())
    assert sink.calls[3:] == [("add", "10.1.200.0/24")]


def test_a_peer_moving_outside_the_list_is_removed() -> None:
    client, sink = Client(), Sink()
    client.set(["1.1.1.1", "1.1.2.1"], 3)
    w = watcher(client, sink)
    refresh(w, client)
    w.apply([WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5))])
    w.apply([WatchEvent("put", kv("10.1.2.0/24", "192.168.255.10", 6))])
    assert sink.calls == [("add", "10.1.2.0/24"), ("remove", "10.1.2.0/24")]
    assert w.peers == {} and len(w.refused) == 1


def test_first_listing_syncs_only_the_admitted() -> None:
    class Lister(Client):
        def subnets(self) -> list[KeyValue]:
            return [kv("10.1.2.0/24", "1.1.2.1", 4), kv("10.1.3.0/24", "9.9.9.9", 5)]

    client, sink = Lister(), Sink()
    client.set(["1.1.2.1"], 3)
    w = watcher(client, sink)
    w._relist()
    # One snapshot read the leases and the list together: no separate GET of the list.
    assert sink.calls == [("sync", "10.1.2.0/24")] and client.snapshots == 1 and client.gets == 0
    key = subnet_key(PREFIX, IPv4Network("10.1.3.0/24"))
    assert [x.key for x in w.refused] == [key]


class Stream:
    """A watch stream handing out ITEMS, then stopping the watcher."""

    def __init__(self, w: SubnetWatcher, items: list, stop_when_empty: bool = True) -> None:
        self.w, self.items, self.stop_when_empty = w, items, stop_when_empty

    def get(self, timeout: float | None = None) -> list[WatchEvent] | None:
        if not self.items:
            if self.stop_when_empty:
                self.w._stop.set()
            return None
        return self.items.pop(0)


def test_the_list_follows_its_watch_without_reads() -> None:
    """The etcd budget: the allow-list's changes arrive on its own watch (no GET per batch of
    lease events, none per idle interval); a refused lease is admitted when the list grows."""
    client, sink = Client(), Sink()
    client.set(["1.1.1.1"], 3)
    w = watcher(client, sink)
    w.allowlist_interval = 0  # would read at every poll if the watch were not used
    refresh(w, client)
    client.gets = 0
    joiner = WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5))
    client.set(["1.1.1.1", "1.1.2.1"], 6)
    grown = WatchEvent("put", client.value)  # type: ignore[arg-type]
    w._allow_watch = Stream(w, [None, [grown]], stop_when_empty=False)  # type: ignore[assignment]
    w._follow(Stream(w, [[joiner], None, None, None]))  # type: ignore[arg-type]
    assert client.gets == 0
    assert sink.calls == [("add", "10.1.2.0/24")] and w.refused == []


def test_without_its_watch_the_list_is_read_once_per_interval() -> None:
    client, sink = Client(), Sink()
    w = watcher(client, sink)
    w.allowlist_interval = 3600
    event = WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5))
    w._follow(Stream(w, [None, [], None, None, [event], None]))  # type: ignore[arg-type]
    assert client.gets == 1  # the first poll (due at start), then not before an hour
    assert sink.calls == [("add", "10.1.2.0/24")]
