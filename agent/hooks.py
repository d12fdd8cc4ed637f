"""Small parts the daemon plugs together: the interface chooser, the backend factory, an etcd
client that counts errors, and a peer sink that serialises backend calls.

Test-only hooks (never set them in production; the agent logs a warning when they are used):
``OVERLAY_AGENT_TEST_BACKEND=module:Class`` replaces the backend registry (make_backend) and
``OVERLAY_AGENT_TEST_IFACE=module:function`` replaces agent.iface.choose_interface.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent.backends import Backend, ExternalInterface, make_backend
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease
from agent.subnet.watch import PeerSink

log = logging.getLogger("agent")

TEST_BACKEND_ENV = "OVERLAY_AGENT_TEST_BACKEND"
TEST_IFACE_ENV = "OVERLAY_AGENT_TEST_IFACE"


class InterfaceChooser(Protocol):
    """agent.net.iface.choose_interface: the underlay from --iface, --iface-regex, --public-ip."""

    def __call__(
        self,
        ifaces: Sequence[str] = (),
        regexes: Sequence[str] = (),
        public_ip: str | None = None,
    ) -> ExternalInterface: ...


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


def load_hook(spec: str) -> Any:
    """``module:attribute`` -> the attribute (test hooks)."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def default_chooser() -> InterfaceChooser:
    """agent.net.iface.choose_interface, or the test stand-in named in the environment."""
    hook = os.environ.get(TEST_IFACE_ENV)
    if hook:
        log.warning("TEST HOOK: interface chooser %s (%s is test-only)", hook, TEST_IFACE_ENV)
        return load_hook(hook)
    return importlib.import_module("agent.net.iface").choose_interface


def default_backend_factory() -> Callable[[NetworkConfig, ExternalInterface], Backend]:
    """make_backend, or the test backend class named in the environment."""
    hook = os.environ.get(TEST_BACKEND_ENV)
    if hook:
        log.warning("TEST HOOK: backend %s (%s is test-only)", hook, TEST_BACKEND_ENV)
        return load_hook(hook)
    return make_backend
