"""Waiting for <prefix>/config: says which key at which endpoints, accepts it once valid."""

from __future__ import annotations

import threading

import pytest

from agent.etcd import EtcdClient
from agent.subnet.config import config_key, wait_for_config

pytestmark = pytest.mark.lab


def test_waits_and_says_what_for(
    etcd: EtcdClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    assert wait_for_config(etcd, prefix, stop, interval=0.1, timeout=0.35) is None
    missing = [
        r.getMessage() for r in caplog.records if "waiting for the network config" in r.message
    ]
    assert 2 <= len(missing) <= 6
    assert f"key {prefix}/config not found at {etcd.endpoints[0].url}" in missing[0]
    etcd.put(config_key(prefix), b'{"Network": "10.1.0.0/33"}')
    caplog.clear()
    assert wait_for_config(etcd, prefix, stop, interval=0.1, timeout=0.15) is None
    assert "please define a correct Network parameter" in caplog.text

    result: list[object] = []
    thread = threading.Thread(
        target=lambda: result.append(wait_for_config(etcd, prefix, stop, 0.1))
    )
    thread.start()
    etcd.put(config_key(prefix), b'{"Network": "10.1.0.0/16", "Backend": {"Type": "host-gw"}}')
    thread.join(5)
    cfg = result[0]
    assert cfg is not None and cfg.backend_type == "host-gw"  # type: ignore[attr-defined]
    stop.set()
    assert wait_for_config(etcd, prefix, stop) is None
