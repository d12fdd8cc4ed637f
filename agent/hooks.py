"""Which interface chooser and backend factory the daemon uses: the real ones, or the test
stand-ins named in the environment.

Test-only hooks (never set them in production; the agent logs a warning when they are used):
``OVERLAY_AGENT_TEST_BACKEND=module:Class`` replaces the backend registry (make_backend) and
``OVERLAY_AGENT_TEST_IFACE=module:function`` replaces agent.net.iface.choose_interface.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent.backends import Backend, ExternalInterface, make_backend
from agent.subnet.config import NetworkConfig

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
