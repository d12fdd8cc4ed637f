"""LeaseManager against a real etcd: acquire, renew, expiry, deletion, reservations, races."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from agent.etcd import EtcdClient, EtcdUnavailable, KeyRange, KeyValue
from agent.subnet.config import NetworkConfig, parse_config
from agent.subnet.layout import Lease, encode_lease_value, subnet_key
from agent.subnet.lease import LeaseError, LeaseManager, list_leases
from tests.integration.conftest import EtcdServer
from tests.polling import wait_for

pytestmark = pytest.mark.lab

VXLAN = {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}


def config(text: str = '{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}') -> NetworkConfig:
    return parse_config(text)


@pytest.fixture
def managers() -> Iterator[list[LeaseManager]]:
    made: list[LeaseManager] = []
    yield made
    for mgr in made:
        mgr.stop()


def manager(
    made: list[LeaseManager], client: EtcdClient, prefix: str, ip: str, **kwargs: object
) -> LeaseManager:
    opts: dict[str, object] = {"ttl": 60, "renew_margin": 10, "rng": random.Random(ip)}  # noqa: S311
    opts.update(kwargs)
    cfg = opts.pop("config", None) or config()
    mgr = LeaseManager(client, prefix, cfg, ip, VXLAN, **opts)  # type: ignore[arg-type]
    made.append(mgr)
    return mgr


class FlakyRefresh(EtcdClient):
    """A real client whose lease refreshes can be made to fail (a partitioned agent)."""

    blocked = False
    refused = 0

    def lease_refresh(self, lease_id: int) -> int:
        if self.blocked:
            self.refused += 1
            raise EtcdUnavailable("test: refresh blocked")
        return super().lease_refresh(lease_id)


class FlakyGrant(EtcdClient):
    """A real client whose lease grants fail until unblocked (etcd without its data or auth)."""

    blocked = True
    refused = 0

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        if self.blocked:
            self.refused += 1
            raise EtcdUnavailable("test: grant blocked")
        return super().lease_grant(ttl)


def test_failed_acquisitions_back_off_from_a_second_not_a_minute(
    etcd_server: EtcdServer, prefix: str, managers
) -> None:
    """With the default 60 s retry interval, acquisitions that failed while etcd could not
    grant (restored, auth not set up yet) are retried after 1, 2, 4 ... s: the lease comes
    within seconds of etcd granting again, not a minute later."""
    client = FlakyGrant([etcd_server.url], timeout=2)
    mgr = manager(managers, client, prefix, "192.168.0.14")
    assert mgr.retry_interval == 60
    mgr.start()
    wait_for(lambda: client.refused >= 2, 10, "two refused grants")
    client.blocked = False
    assert wait_for(lambda: mgr.current, 10, "the lease once etcd grants") is not None
    client.close()


def test_acquire_value_and_flannel_layout(etcd: EtcdClient, prefix: str, managers) -> None:
    mgr = manager(managers, etcd, prefix, "192.168.0.10")
    lease = mgr.acquire()
    kv = etcd.get(subnet_key(prefix, lease.subnet))
    assert kv is not None and kv.lease_id == lease.lease_id != 0
    assert json.loads(kv.value) == {
        "PublicIP": "192.168.0.10",
        "BackendType": "vxlan",
        "BackendData": VXLAN,
    }
    assert 0 < etcd.lease_ttl(lease.lease_id) <= 60
    assert kv.key == f"{prefix}/subnets/{lease.subnet.network_address}-24"


def test_renew_then_expiry_reacquires_same_subnet(
    etcd_server: EtcdServer, prefix: str, managers
) -> None:
    client = FlakyRefresh([etcd_server.url], timeout=2)
    mgr = manager(
        managers, client, prefix, "192.168.0.11", ttl=2, renew_margin=1, retry_interval=0.3
    )
    mgr.start()
    first = mgr.wait_for_lease(5)
    assert first is not None
    time.sleep(3.5)  # beyond the TTL: only renewals keep it
    kv = client.get(first.key)
    assert kv is not None and kv.lease_id == first.lease_id
    client.blocked = True  # renewals fail from now on: the etcd lease expires

    def expired() -> bool:
        kv = client.get(first.key)  # once: the key may expire between two reads
        return kv is None or kv.lease_id != first.lease_id

    wait_for(expired)
    client.blocked = False
    again = wait_for(
        lambda: mgr.current if mgr.current and mgr.current.lease_id != first.lease_id else None
    )
    assert isinstance(again, Lease)
    assert again.subnet == first.subnet
    assert client.refused >= 2  # failed renewals were retried
    client.close()


def test_deleted_key_is_reacquired_within_seconds(etcd: EtcdClient, prefix: str, managers) -> None:
    changes: list[tuple[Lease | None, Lease | None]] = []
    mgr = manager(
        managers, etcd, prefix, "192.168.0.12", on_change=lambda o, n: changes.append((o, n))
    )
    mgr.start()
    first = mgr.wait_for_lease(5)
    assert first is not None
    etcd.delete(first.key)
    start = time.monotonic()
    wait_for(lambda: etcd.get(first.key) is not None, timeout=5)
    assert time.monotonic() - start < 3
    assert mgr.current is not None and mgr.current.subnet == first.subnet
    assert changes[0] == (None, first)  # same attributes after re-acquiring: no data-plane churn
    assert len(changes) == 1


def test_restart_keeps_own_lease(etcd: EtcdClient, prefix: str, managers) -> None:
    first = manager(managers, etcd, prefix, "192.168.0.13").acquire()
    again = manager(managers, etcd, prefix, "192.168.0.13").acquire()
    assert again.subnet == first.subnet and again.lease_id != first.lease_id


def test_previous_subnet_preferred(etcd: EtcdClient, prefix: str, managers) -> None:
    prev = IPv4Network("10.1.200.0/24")
    lease = manager(managers, etcd, prefix, "192.168.0.14", previous_subnet=prev).acquire()
    assert lease.subnet == prev


def test_reservation_is_honoured(etcd: EtcdClient, prefix: str, managers) -> None:
    cfg = config('{"Network": "10.2.0.0/21", "SubnetLen": 24, "Backend": {"Type": "udp"}}')
    reserved = IPv4Network("10.2.5.0/24")
    key = subnet_key(prefix, reserved)
    etcd.put(key, encode_lease_value("192.168.0.50", "udp", None))
    got = []
    for i in range(6):  # every other subnet; one of them prefers the reserved one
        prev = reserved if i == 0 else None
        got.append(
            manager(managers, etcd, prefix, f"192.168.0.{20 + i}", config=cfg, previous_subnet=prev)
            .acquire()
            .subnet
        )
    assert reserved not in got and len(set(got)) == 6
    with pytest.raises(LeaseError, match="no free subnet"):
        manager(managers, etcd, prefix, "192.168.0.30", config=cfg).acquire()
    owner = manager(managers, etcd, prefix, "192.168.0.50", config=cfg).acquire()
    assert owner.subnet == reserved and owner.is_reservation
    kv = etcd.get(key)
    assert kv is not None and kv.lease_id == 0
    assert json.loads(kv.value)["BackendData"] == VXLAN


def test_thirty_agents_at_once(
    etcd_server: EtcdServer, etcd: EtcdClient, prefix: str, managers
) -> None:
    count = 30
    barrier = threading.Barrier(count)
    results: dict[int, Lease | BaseException] = {}
    clients = [etcd_server.client() for _ in range(count)]  # one connection per agent
    mgrs = [manager(managers, clients[i], prefix, f"192.168.1.{i + 1}") for i in range(count)]

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = mgrs[i].acquire()
        except BaseException as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for cli in clients:
        cli.close()
    leases = [r for r in results.values() if isinstance(r, Lease)]
    assert len(leases) == count, results
    subnets = [x.subnet for x in leases]
    assert len(set(subnets)) == count
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    stored, _ = list_leases(etcd, prefix)
    assert sorted(str(x.public_ip) for x in stored) == sorted(
        f"192.168.1.{i + 1}" for i in range(count)
    )


class LosesFirstRace(EtcdClient):
    """Another host writes the chosen key just before our create transaction."""

    raced: IPv4Network | None = None

    def put_else_get(
        self, key: str, value: bytes | str, lease_id: int, other: KeyRange, mod_revision: int = 0
    ) -> tuple[bool, list[KeyValue], int]:
        if self.raced is None:
            self.raced = IPv4Network(key.rsplit("/", 1)[1].replace("-", "/"))
            self.put(key, encode_lease_value("192.168.9.9", "vxlan", None))
        return super().put_else_get(key, value, lease_id, other, mod_revision)


def test_lost_race_is_retried(etcd_server: EtcdServer, prefix: str, managers) -> None:
    client = LosesFirstRace([etcd_server.url], timeout=2)
    lease = manager(managers, client, prefix, "192.168.0.15").acquire()
    assert client.raced is not None and lease.subnet != client.raced
    winner = client.get(subnet_key(prefix, client.raced))
    assert winner is not None and b"192.168.9.9" in winner.value
    client.close()


def test_conflicts_reported(etcd: EtcdClient, prefix: str, managers) -> None:
    etcd.put(
        subnet_key(prefix, IPv4Network("10.1.3.0/24")),
        encode_lease_value("10.9.0.1", "vxlan", None),
    )
    etcd.put(
        subnet_key(prefix, IPv4Network("10.1.4.0/24")),
        encode_lease_value("10.9.0.1", "vxlan", None),
    )
    etcd.put(
        subnet_key(prefix, IPv4Network("10.1.4.0/25")),
        encode_lease_value("10.9.0.2", "vxlan", None),
    )
    etcd.put(f"{prefix}/subnets/10.1.5.0-24", b"not json")
    mgr = manager(managers, etcd, prefix, "192.168.0.16")
    kinds = sorted(c.kind for c in mgr.check_conflicts())
    assert kinds == ["duplicate-public-ip", "overlapping-subnets"]


def test_taken_over_subnet_moves_us_elsewhere(etcd: EtcdClient, prefix: str, managers) -> None:
    mgr = manager(managers, etcd, prefix, "192.168.0.17", check_interval=0.5)
    mgr.start()
    first = mgr.wait_for_lease(5)
    assert first is not None
    etcd.put(first.key, encode_lease_value("192.168.0.99", "vxlan", None))  # a rogue host
    wait_for(lambda: mgr.current is not None and mgr.current.subnet != first.subnet)
    rogue = etcd.get(first.key)
    assert rogue is not None and b"192.168.0.99" in rogue.value


def test_reservation_written_for_us_is_adopted(etcd: EtcdClient, prefix: str, managers) -> None:
    mgr = manager(managers, etcd, prefix, "192.168.0.18")
    mgr.start()
    first = mgr.wait_for_lease(5)
    assert first is not None
    etcd.put(first.key, encode_lease_value("192.168.0.18", "vxlan", VXLAN))  # operator pins it
    wait_for(lambda: mgr.current is not None and mgr.current.is_reservation)
    assert mgr.current.subnet == first.subnet and mgr.expires_at is None
    assert etcd.lease_ttl(first.lease_id) == -1  # our etcd lease was released


def test_backend_data_update_keeps_the_lease(etcd: EtcdClient, prefix: str, managers) -> None:
    mgr = manager(managers, etcd, prefix, "192.168.0.19")
    first = mgr.acquire()
    updated = mgr.set_backend_data({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:99"})
    assert updated is not None and updated.lease_id == first.lease_id
    kv = etcd.get(first.key)
    assert kv is not None and json.loads(kv.value)["BackendData"]["VtepMAC"].endswith("99")


def test_a_full_network_says_so_and_takes_the_first_freed_subnet(
    etcd: EtcdClient, prefix: str, managers: list[LeaseManager], caplog: pytest.LogCaptureFixture
) -> None:
    """Three subnets, three holders: the fourth agent fails with one clear line, retries at a
    bounded rate (backoff, 1 s apart at least), and takes a subnet as soon as one is deleted,
    not at the end of its backoff (a watch of the leases wakes it)."""
    cfg = config('{"Network": "10.9.0.0/24", "SubnetLen": 26, "Backend": {"Type": "vxlan"}}')
    held = [
        manager(managers, etcd, prefix, f"192.168.1.{i}", config=cfg).acquire() for i in range(3)
    ]
    waiting = manager(managers, etcd, prefix, "192.168.1.9", config=cfg, retry_interval=60)
    waiting.start()
    deadline = time.monotonic() + 5
    while "no free subnet" not in waiting.last_error and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting.last_error == "no free subnet in 10.9.0.0/24 (3 leased)"
    time.sleep(3.2)  # attempts at 0, 1, 3 s: the next one would be at 7 s
    attempts = caplog.text.count("no free subnet in 10.9.0.0/24")
    assert 2 <= attempts <= 3, caplog.text
    freed = time.monotonic()
    etcd.delete(held[1].key)
    got = waiting.wait_for_lease(timeout=3)
    assert got is not None and got.subnet == held[1].subnet, waiting.last_error
    assert time.monotonic() - freed < 2.0
