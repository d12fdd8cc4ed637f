"""Backend registry: flannel's Backend.Type -> the class that implements it (imported lazily)."""

from __future__ import annotations

import importlib

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.config import NetworkConfig

_BACKENDS = {
    "vxlan": ("agent.backends.vxlan", "VxlanBackend"),
    "host-gw": ("agent.backends.hostgw", "HostGwBackend"),
    "udp": ("agent.backends.udp", "UdpBackend"),
}


def make_backend(config: NetworkConfig, iface: ExternalInterface) -> Backend:
    """The backend for config.backend_type, built for IFACE."""
    try:
        module_name, class_name = _BACKENDS[config.backend_type]
    except KeyError:
        raise BackendError(f"unknown backend type {config.backend_type!r}") from None
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(config, iface)


__all__ = ["Backend", "BackendError", "ExternalInterface", "make_backend"]
