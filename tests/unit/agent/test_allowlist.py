"""The admin's allow-list of PublicIPs: parsing, judging, and the watch loop that applies it
(no etcd: a stand-in client answers the single-key GET)."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.etcd import EtcdUnavailable, KeyValue, WatchEvent
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
    w.apply([])  # nothing yet; the list is read before each batch by _follow
    w.refresh_allowlist()
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
    assert w.refresh_allowlist()
    w.reconcile(w._admitted())
    assert sink.calls[1:] == [("add", "10.1.200.0/24")] and w.refused == []
    # ... removes it again: it goes; the key deleted: every lease is accepted again.
    client.set(["1.1.1.1", "1.1.2.1"], 8)
    assert w.refresh_allowlist()
    w.reconcile(w._admitted())
    assert sink.calls[2:] == [("remove", "10.1.200.0/24")]
    client.set(None, 0)
    assert w.refresh_allowlist() and w.allowlist is not None and w.allowlist.ips is None
    w.reconcile(w._admitted())
    assert sink.calls[3:] == [("add", "10.1.200.0/24")]


def test_a_peer_moving_outside_the_list_is_removed() -> None:
    client, sink = Client(), Sink()
    client.set(["1.1.1.1", "1.1.2.1"], 3)
    w = watcher(client, sink)
    w.refresh_allowlist()
    w.apply([WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5))])
    w.apply([WatchEvent("put", kv("10.1.2.0/24", "192.168.255.10", 6))])
    assert sink.calls == [("add", "10.1.2.0/24"), ("remove", "10.1.2.0/24")]
    assert w.peers == {} and len(w.refused) == 1


def test_first_listing_syncs_only_the_admitted() -> None:
    class Lister(Client):
        def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
            return [kv("10.1.2.0/24", "1.1.2.1", 4), kv("10.1.3.0/24", "9.9.9.9", 5)], 9

    client, sink = Lister(), Sink()
    client.set(["1.1.2.1"], 3)
    w = watcher(client, sink)
    w._relist()
    assert sink.calls == [("sync", "10.1.2.0/24")] and client.gets == 1
    key = subnet_key(PREFIX, IPv4Network("10.1.3.0/24"))
    assert [x.key for x in w.refused] == [key]


def test_the_list_is_read_per_event_batch_and_at_most_once_per_interval_when_idle() -> None:
    """The etcd budget: an idle watch reads the key once per interval, not per poll; an
    empty message (the watch's first) costs nothing; a batch of events reads it first."""

    class Stream:
        def __init__(self, w: SubnetWatcher, items: list) -> None:
            self.w, self.items = w, items

        def get(self, timeout: float | None = None) -> list[WatchEvent] | None:
            if not self.items:
                self.w._stop.set()
                return None
            return self.items.pop(0)

    client, sink = Client(), Sink()
    w = watcher(client, sink)
    w.allowlist_interval = 3600
    event = WatchEvent("put", kv("10.1.2.0/24", "1.1.2.1", 5))
    w._follow(Stream(w, [None, [], None, None, [event], None]))  # type: ignore[arg-type]
    assert client.gets == 2  # the first idle poll (due at start) and the event batch
    assert sink.calls == [("add", "10.1.2.0/24")]
