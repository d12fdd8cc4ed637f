"""The one interface every data plane implements (flannel: one folder per backend).

The agent's wiring knows only this class: it builds a backend for the configured type, asks it
for the BackendData to publish in its own lease and the MTU for subnet.env, calls `setup` with
its own lease, then feeds it remote leases through the PeerSink methods (from
agent/subnet/watch.py).
`teardown` removes what the backend created; without --cleanup-on-exit the agent leaves the
data plane up on exit so traffic keeps flowing across an agent restart.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import Any

from agent.net.iface import ExternalInterface
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease
from agent.subnet.watch import PeerSink


class BackendError(Exception):
    """The data plane cannot be programmed as asked (one clear line)."""


class Backend(PeerSink, abc.ABC):
    """A data plane. Methods are called from one thread at a time, except `stats`."""

    type_name: str = ""

    def __init__(self, config: NetworkConfig, iface: ExternalInterface) -> None:
        self.config = config
        self.iface = iface

    @classmethod
    def device_for(cls, config: NetworkConfig) -> str | None:
        """The overlay device this backend keeps for CONFIG (None: it makes none)."""
        return None

    @property
    @abc.abstractmethod
    def mtu(self) -> int:
        """The MTU containers must use (FLANNEL_MTU)."""

    def backend_data(self) -> dict[str, Any] | None:
        """The BackendData published in our lease (vxlan: VNI and VtepMAC); None if none."""
        return None

    @abc.abstractmethod
    def setup(self, own: Lease) -> None:
        """Create and configure local devices and routes for our own lease. Idempotent."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Remove every device, route, neighbour and fdb entry this backend created."""

    def stats(self) -> dict[str, float]:
        """Counters for /metrics (e.g. routes programmed; udp packets, bytes, drops)."""
        return {}


class SerialSink(PeerSink):
    """Forwards peer changes to the backend under the lock its setup also takes."""

    def __init__(self, backend: Backend, lock: threading.Lock) -> None:
        self.backend = backend
        self.lock = lock

    def add_peer(self, lease: Lease) -> None:
        with self.lock:
            self.backend.add_peer(lease)

    def remove_peer(self, lease: Lease) -> None:
        with self.lock:
            self.backend.remove_peer(lease)

    def replace_peer(self, old: Lease, new: Lease) -> None:
        with self.lock:
            self.backend.replace_peer(old, new)

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        with self.lock:
            self.backend.sync_peers(leases)
