"""One read of all the agent needs to start: the network config, the allow-list and every
lease, in a single etcd request at a single revision (a transaction of three reads).

Why one request: an agent used to read these separately (the config, the allow-list, the leases
once to choose a subnet and again to start its watch), then the allow-list once more per batch
of lease events. benchmarks/scale.py counted 37 etcd requests per agent at start with 100 agents
(Range 32.7 of them), growing with the number of agents. Now the lease choice and the first sync
of the watch share this snapshot, and the watch resumes at its revision + 1, so nothing written
in between is missed. Each read stays within what the host role may read (the config key, the
allow-list key, the subnets prefix): no wider permission is needed.

While the config is missing, the config key alone is watched from the snapshot's revision, so a
config written later is seen at once rather than at the next poll (every agent of a new cluster
waits there); the wait still logs what it waits for once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from agent.etcd import EtcdClient, EtcdError, KeyRange, KeyValue
from agent.subnet.allowlist import allowlist_key
from agent.subnet.config import ConfigError, NetworkConfig, config_key, parse_config
from agent.subnet.layout import subnets_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefixSnapshot:
    """``<prefix>/config``, ``<prefix>/allowed-public-ips`` and every key under
    ``<prefix>/subnets/``, all as of ``revision``."""

    config: KeyValue | None
    allowlist: KeyValue | None
    subnets: list[KeyValue]
    revision: int


def read_snapshot(client: EtcdClient, prefix: str) -> PrefixSnapshot:
    """The snapshot, in one request (EtcdError if etcd does not answer)."""
    (config, allowed, subnets), revision = client.get_ranges(
        [
            KeyRange(config_key(prefix)),
            KeyRange(allowlist_key(prefix)),
            KeyRange(subnets_dir(prefix), prefix=True),
        ]
    )
    return PrefixSnapshot(
        config[0] if config else None, allowed[0] if allowed else None, subnets, revision
    )


def wait_for_snapshot(
    client: EtcdClient,
    prefix: str,
    stop: threading.Event,
    interval: float = 10.0,
    timeout: float | None = None,
) -> tuple[NetworkConfig, PrefixSnapshot] | None:
    """Read until the config exists and is valid: (config, snapshot), or None if stopped or
    timed out. Once per ``interval`` it logs exactly what it waits for: the key, the
    endpoints, and whether the key is missing (flannel #1168), invalid, or etcd unreachable.
    """
    key = config_key(prefix)
    endpoints = ",".join(ep.url for ep in client.endpoints)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop.is_set():
        snapshot: PrefixSnapshot | None = None
        try:
            snapshot = read_snapshot(client, prefix)
            if snapshot.config is not None:
                return parse_config(snapshot.config.value), snapshot
            problem = f"key {key} not found at {endpoints} (was it written with the v3 API?)"
        except ConfigError as exc:
            problem = f"invalid config in {key} at {endpoints}: {exc}"
        except EtcdError as exc:
            problem = f"cannot read {key} from {endpoints}: {exc}"
        log.warning("waiting for the network config: %s", problem)
        wait = interval
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return None
        _wait_for_change(client, key, snapshot, stop, wait)
    return None


def _wait_for_change(
    client: EtcdClient,
    key: str,
    snapshot: PrefixSnapshot | None,
    stop: threading.Event,
    wait: float,
) -> None:
    """Until KEY changes after SNAPSHOT (watched), WAIT passes or STOP is set."""
    if snapshot is None:  # etcd did not answer: nothing to watch from
        stop.wait(wait)
        return
    try:
        stream = client.watch(KeyRange(key), snapshot.revision + 1)
    except EtcdError:
        stop.wait(wait)
        return
    try:
        end = time.monotonic() + wait
        while not stop.is_set() and time.monotonic() < end:
            if stream.get(timeout=min(0.5, max(end - time.monotonic(), 0.01))):
                return  # the key changed: read again
    except EtcdError:
        stop.wait(min(wait, 1.0))
    finally:
        stream.cancel()
