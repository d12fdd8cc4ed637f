"""Waiting for <prefix>/config: says which key at which endpoints, accepts it once valid, and
sees a config written later at once (watched), with the leases in the same snapshot."""

from __future__ import annotations

import threading
import time

import pytest

from agent.etcd import EtcdClient
from agent.subnet.config import config_key
from agent.subnet.snapshot import wait_for_snapshot

pytestmark = pytest.mark.lab

HOST_GW = b'{"Network": "10.1.0.0/16", "Backend": {"Type": "host-gw"}}'


def test_waits_and_says_what_for(
    etcd: EtcdClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    assert wait_for_snapshot(etcd, prefix, stop, interval=0.1, timeout=0.35) is None
    missing = [
        r.getMessage() for r in caplog.records if "waiting for the network config" in r.message
    ]
    assert 2 <= len(missing) <= 6
    assert f"key {prefix}/config not found at {etcd.endpoints[0].url}" in missing[0]
    etcd.put(config_key(prefix), b'{"Network": "10.1.0.0/33"}')
    caplog.clear()
    assert wait_for_snapshot(etcd, prefix, stop, interval=0.1, timeout=0.15) is None
    assert "please define a correct Network parameter" in caplog.text
    stop.set()
    assert wait_for_snapshot(etcd, prefix, stop) is None


def test_a_config_written_later_is_seen_at_once(etcd: EtcdClient, prefix: str) -> None:
    """With a 30 s poll interval, only the watch can see the config within a second."""
    etcd.put(f"{prefix}/subnets/10.1.7.0-24", b'{"PublicIP": "192.0.2.7"}')
    stop = threading.Event()
    result: list[object] = []
    thread = threading.Thread(
        target=lambda: result.append(wait_for_snapshot(etcd, prefix, stop, interval=30))
    )
    thread.start()
    time.sleep(0.5)  # the wait reads, finds no config and watches
    written = time.monotonic()
    etcd.put(config_key(prefix), HOST_GW)
    thread.join(5)
    stop.set()
    seen = time.monotonic() - written
    assert result and result[0] is not None, "the config was not seen"
    config, snapshot = result[0]  # type: ignore[misc]
    assert config.backend_type == "host-gw" and seen < 1.0, seen
    assert [kv.key for kv in snapshot.subnets] == [f"{prefix}/subnets/10.1.7.0-24"]
    assert snapshot.config is not None and snapshot.revision >= snapshot.config.mod_revision
