"""The daemon's small parts: logfmt lines, the serialising sink, error counting, rule sets."""

from __future__ import annotations

import io
import logging
import threading
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from agent.backends.base import SerialSink
from agent.etcd import EtcdClientBase, EtcdUnavailable, client_class
from agent.hooks import load_hook
from agent.logs import LogfmtFormatter, event, format_fields, setup_logging
from agent.net.iptables import FORWARD_CHAIN, MASQ_CHAIN
from agent.rules import RulesKeeper, _Rules
from agent.subnet.layout import Lease
from agent.subnet.watch import PeerSink

NET = IPv4Network("10.5.0.0/16")
SUB = IPv4Network("10.5.3.0/24")


def test_format_fields_quotes_and_escapes() -> None:
    line = format_fields({"a": "plain", "b": "two words", "c": 'q"x', "d": None, "e": "l1\nl2"})
    assert line == 'a=plain b="two words" c="q\\"x" e="l1\\nl2"'


def test_log_lines_are_single_logfmt_lines() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("debug", stream)
    try:
        log = logging.getLogger("agent.test")
        event(log, logging.INFO, "ready", subnet=SUB, file="/run/flannel/subnet.env")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "level=info logger=agent.test msg=ready event=ready subnet=10.5.3.0/24" in lines[0]
    assert lines[1].startswith("ts=") and 'exc="Traceback' in lines[1]
    assert "boom\\nsecond line" in lines[1]


def test_formatter_levels() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s left", ("3",), None)
    assert ' level=warning logger=x msg="3 left"' in LogfmtFormatter().format(record)


class RecordingSink(PeerSink):
    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.calls: list[tuple[str, bool]] = []

    def add_peer(self, lease: Lease) -> None:
        self.calls.append(("add", self.lock.locked()))

    def remove_peer(self, lease: Lease) -> None:
        self.calls.append(("remove", self.lock.locked()))


def test_serial_sink_holds_the_lock() -> None:
    lock = threading.Lock()
    inner = RecordingSink(lock)
    sink = SerialSink(inner, lock)  # type: ignore[arg-type]
    lease = Lease(SUB, IPv4Address("10.0.0.5"), "udp")
    sink.add_peer(lease)
    sink.replace_peer(lease, lease)
    sink.sync_peers([lease])
    sink.remove_peer(lease)
    assert inner.calls == [("add", True), ("remove", True), ("add", True), ("add", True),
                           ("remove", True)]  # fmt: skip
    assert not lock.locked()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_client_counts_failures(transport: str) -> None:
    client = client_class(transport)(["http://127.0.0.1:1"], timeout=0.5)
    try:
        with pytest.raises(EtcdUnavailable):
            client.get("/x")
        assert client.errors == 1
    finally:
        client.close()
    assert isinstance(client, EtcdClientBase) and client.transport == transport


def test_load_hook() -> None:
    assert load_hook("agent.rules:RulesKeeper") is RulesKeeper


def test_rule_sets_follow_the_flags() -> None:
    def chains(rules: Any) -> list[str]:
        return [body[0].chain for _, body in rules._sets()]

    assert chains(_Rules(NET, SUB, fwd=True, masq=True)) == [FORWARD_CHAIN, MASQ_CHAIN]
    assert chains(_Rules(NET, SUB, fwd=False, masq=True)) == [MASQ_CHAIN]
    assert chains(_Rules(NET, SUB, fwd=True, masq=False)) == [FORWARD_CHAIN]


def test_rules_keeper_without_rules_runs_nothing() -> None:
    keeper = RulesKeeper(NET, forward=False, ip_masq=False, resync=5)
    assert not keeper.wanted
    assert keeper.apply(SUB)
    keeper.tick()
    keeper.teardown()
    assert keeper.errors == 0
