"""The peers-only chain's rule set and the sink that tells it the accepted PublicIPs (pure:
no iptables is run; the kernel side is tests/integration/agent/test_peers_only.py)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.backends.peerset import PeerSetSink
from agent.net.peerchain import PEERS_CHAIN, chain_listing, jump_rule, restore_input
from agent.subnet.layout import Lease
from agent.subnet.watch import PeerSink


def test_chain_is_one_return_per_peer_then_drop() -> None:
    ips = [IPv4Address("10.0.0.9"), IPv4Address("10.0.0.10"), IPv4Address("10.0.0.9")]
    assert chain_listing(ips) == [
        f"-A {PEERS_CHAIN} -s 10.0.0.9/32 -j RETURN",
        f"-A {PEERS_CHAIN} -s 10.0.0.10/32 -j RETURN",
        f"-A {PEERS_CHAIN} -j DROP",
    ]
    assert chain_listing([]) == [f"-A {PEERS_CHAIN} -j DROP"]  # no peers: nobody


def test_restore_replaces_the_chain_in_one_commit() -> None:
    text = restore_input([IPv4Address("10.0.0.9")], jump_rule(4789))
    lines = text.splitlines()
    # The :CHAIN line flushes it inside the commit: no moment without the DROP.
    assert lines[:2] == ["*filter", f":{PEERS_CHAIN} - [0:0]"] and lines[-1] == "COMMIT"
    assert lines[4] == (
        '-I INPUT 1 -p udp --dport 4789 -m comment --comment "overlay-agent peers only" '
        f"-j {PEERS_CHAIN}"
    )
    assert "-I INPUT" not in restore_input([])


class Inner(PeerSink):
    def __init__(self) -> None:
        self.refuse: set[str] = set()

    def add_peer(self, lease: Lease) -> None:
        if str(lease.subnet) in self.refuse:
            raise ValueError("refused")

    def remove_peer(self, lease: Lease) -> None:
        pass

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        pass


def lease(third: int, ip: str) -> Lease:
    return Lease(IPv4Network(f"10.1.{third}.0/24"), IPv4Address(ip), "vxlan", key=f"k{third}")


def test_peer_set_reports_only_changes_and_skips_refused() -> None:
    inner, reports = Inner(), []
    sink = PeerSetSink(inner, reports.append)
    sink.sync_peers([lease(2, "1.1.1.2"), lease(3, "1.1.1.3")])
    sink.add_peer(lease(4, "1.1.1.3"))  # same PublicIP as another: the set does not move
    sink.flush()
    inner.refuse.add("10.1.5.0/24")
    with pytest.raises(ValueError):
        sink.add_peer(lease(5, "1.1.1.5"))
    sink.flush()
    sink.replace_peer(lease(2, "1.1.1.2"), lease(2, "1.1.1.7"))
    sink.remove_peer(lease(3, "1.1.1.3"))
    ip = IPv4Address
    assert len(reports) == 1  # nothing until the batch ends
    sink.flush()
    # The refused lease 5 never shows; removing lease 3 leaves 1.1.1.3 (lease 4 has it).
    assert reports == [{ip("1.1.1.2"), ip("1.1.1.3")}, {ip("1.1.1.7"), ip("1.1.1.3")}]
    sink.remove_peer(lease(4, "1.1.1.3"))
    sink.flush()
    assert reports[-1] == {ip("1.1.1.7")}
