"""SubnetWatcher against a real etcd: add/replace/remove, restarts, compaction, junk values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Network

import pytest

from agent.etcd import EtcdClient
from agent.subnet.layout import Lease, encode_lease_value, subnet_key
from agent.subnet.watch import Backoff, PeerSink, SubnetWatcher
from tests.integration.conftest import EtcdServer
from tests.polling import wait_for

pytestmark = pytest.mark.lab

OWN = IPv4Network("10.1.1.0/24")


class RecordingSink(PeerSink):
    """Records every call; ``peers`` is what a data plane would have programmed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.peers: dict[IPv4Network, Lease] = {}
        self.on_sync: Callable[[], None] | None = None
        self.lock = threading.Lock()

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        with self.lock:
            self.calls.append(("sync", ",".join(sorted(str(x.subnet) for x in leases))))
            self.peers = {x.subnet: x for x in leases}
        if self.on_sync is not None:
            self.on_sync()

    def add_peer(self, lease: Lease) -> None:
        with self.lock:
            self.calls.append(("add", str(lease.subnet)))
            self.peers[lease.subnet] = lease

    def replace_peer(self, old: Lease, new: Lease) -> None:
        with self.lock:
            self.calls.append(("replace", str(new.subnet)))
            self.peers[new.subnet] = new

    def remove_peer(self, lease: Lease) -> None:
        with self.lock:
            self.calls.append(("remove", str(lease.subnet)))
            self.peers.pop(lease.subnet, None)

    def subnets(self) -> set[str]:
        with self.lock:
            return {str(s) for s in self.peers}


def put_lease(client: EtcdClient, prefix: str, subnet: str, ip: str, mac: str = "aa:00") -> None:
    value = encode_lease_value(ip, "vxlan", {"VNI": 1, "VtepMAC": mac})
    client.put(subnet_key(prefix, IPv4Network(subnet)), value)


@pytest.fixture
def watching() -> Iterator[list[SubnetWatcher]]:
    made: list[SubnetWatcher] = []
    yield made
    for watcher in made:
        watcher.stop()


def start_watcher(
    made: list[SubnetWatcher], client: EtcdClient, prefix: str, sink: RecordingSink
) -> SubnetWatcher:
    own_events: list[int] = []
    watcher = SubnetWatcher(
        client,
        prefix,
        sink,
        own_subnet=lambda: OWN,
        on_own_event=lambda kv: own_events.append(1),
        backoff=Backoff(0.1, 1.0),
    )
    watcher.own_events = own_events  # type: ignore[attr-defined]
    made.append(watcher)
    watcher.start()
    assert watcher.synced.wait(5)
    return watcher


def test_remote_leases_follow_etcd(etcd: EtcdClient, prefix: str, watching) -> None:
    put_lease(etcd, prefix, "10.1.1.0/24", "192.168.0.1")  # our own: never a peer
    put_lease(etcd, prefix, "10.1.2.0/24", "192.168.0.2")
    etcd.put(f"{prefix}/subnets/10.1.9.0-24", b"{broken")
    sink = RecordingSink()
    watcher = start_watcher(watching, etcd, prefix, sink)
    assert sink.calls == [("sync", "10.1.2.0/24")]
    put_lease(etcd, prefix, "10.1.3.0/24", "192.168.0.3")
    wait_for(lambda: "10.1.3.0/24" in sink.subnets())
    put_lease(etcd, prefix, "10.1.3.0/24", "192.168.0.3", mac="bb:00")  # new VtepMAC
    wait_for(lambda: ("replace", "10.1.3.0/24") in sink.calls)
    etcd.put(subnet_key(prefix, IPv4Network("10.1.3.0/24")), b"garbage")  # keep last good
    etcd.delete(subnet_key(prefix, IPv4Network("10.1.2.0/24")))
    wait_for(lambda: ("remove", "10.1.2.0/24") in sink.calls)
    assert sink.subnets() == {"10.1.3.0/24"}
    assert sink.peers[IPv4Network("10.1.3.0/24")].backend_data["VtepMAC"] == "bb:00"  # type: ignore[index]
    etcd.delete(subnet_key(prefix, OWN))
    wait_for(lambda: watcher.own_events)  # type: ignore[attr-defined]
    assert all(s != "10.1.1.0/24" for _, s in sink.calls)


def test_etcd_restart_resumes_and_reports_changes(
    own_etcd: EtcdServer, prefix: str, watching
) -> None:
    client = own_etcd.client(timeout=1)
    put_lease(client, prefix, "10.1.2.0/24", "192.168.0.2")
    sink = RecordingSink()
    watcher = start_watcher(watching, client, prefix, sink)
    own_etcd.stop()
    wait_for(lambda: watcher.stats["errors"] >= 1, timeout=15)
    time.sleep(1.5)  # down for a while: the loop backs off instead of spinning
    assert watcher.stats["errors"] < 10
    own_etcd.start()
    with own_etcd.client() as other:  # another host joins while we may still be disconnected
        put_lease(other, prefix, "10.1.4.0/24", "192.168.0.4")
        other.delete(subnet_key(prefix, IPv4Network("10.1.2.0/24")))
    wait_for(lambda: sink.subnets() == {"10.1.4.0/24"}, timeout=15)
    put_lease(client, prefix, "10.1.5.0/24", "192.168.0.5")  # and the watch is live again
    wait_for(lambda: "10.1.5.0/24" in sink.subnets(), timeout=10)
    client.close()


def test_compaction_triggers_relist(etcd: EtcdClient, prefix: str, watching) -> None:
    sink = RecordingSink()
    put_lease(etcd, prefix, "10.1.2.0/24", "192.168.0.2")

    def compact_behind_the_watchers_back() -> None:
        # Runs between the first list and the watch: history the watch needs is then gone.
        sink.on_sync = None
        put_lease(etcd, prefix, "10.1.6.0/24", "192.168.0.6")
        etcd.delete(subnet_key(prefix, IPv4Network("10.1.2.0/24")))
        etcd.compact(etcd.put(f"{prefix}/marker", b"x"))

    sink.on_sync = compact_behind_the_watchers_back
    watcher = start_watcher(watching, etcd, prefix, sink)
    wait_for(lambda: watcher.stats["compactions"] >= 1)
    wait_for(lambda: sink.subnets() == {"10.1.6.0/24"})
    assert sink.calls == [
        ("sync", "10.1.2.0/24"),
        ("remove", "10.1.2.0/24"),
        ("add", "10.1.6.0/24"),
    ]
    put_lease(etcd, prefix, "10.1.7.0/24", "192.168.0.7")
    wait_for(lambda: "10.1.7.0/24" in sink.subnets())
    assert watcher.stats["compactions"] == 1
