"""Backend registry: flannel's Backend.Type -> the class that implements it (imported lazily)."""

from __future__ import annotations

import importlib
import logging

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.net.netlink import Netlink
from agent.subnet.config import NetworkConfig

log = logging.getLogger("agent")

_BACKENDS = {
    "vxlan": ("agent.backends.vxlan", "VxlanBackend"),
    "host-gw": ("agent.backends.hostgw", "HostGwBackend"),
    "udp": ("agent.backends.udp.backend", "UdpBackend"),
}


def backend_class(config: NetworkConfig) -> type[Backend]:
    """The class implementing config.backend_type (its module imported now)."""
    try:
        module_name, class_name = _BACKENDS[config.backend_type]
    except KeyError:
        raise BackendError(f"unknown backend type {config.backend_type!r}") from None
    return getattr(importlib.import_module(module_name), class_name)


def make_backend(config: NetworkConfig, iface: ExternalInterface) -> Backend:
    """The backend for config.backend_type, built for IFACE, after removing the overlay
    devices of any other backend (a changed Backend.Type or VNI; routes through them go too)."""
    cls = backend_class(config)
    with Netlink() as nl:
        for name in foreign_devices(config, [str(link["name"]) for link in nl.links()]):
            log.info("removing %s: not used by the %s backend of this config", name, cls.type_name)
            nl.delete_link(name)
    return cls(config, iface)


def is_overlay_device(name: str) -> bool:
    """flannel0 (udp) or flannel.<VNI> (vxlan): the devices flannel's backends make."""
    return name == "flannel0" or (name.startswith("flannel.") and name[8:].isdigit())


def foreign_devices(config: NetworkConfig, links: list[str]) -> list[str]:
    """Pure: of LINKS, the overlay devices CONFIG's backend does not use. They are what a
    previous backend (or VNI) left: its routes and MTU would shadow the new data plane's."""
    keep = backend_class(config).device_for(config)
    return [name for name in links if is_overlay_device(name) and name != keep]


__all__ = [
    "Backend",
    "BackendError",
    "ExternalInterface",
    "backend_class",
    "foreign_devices",
    "is_overlay_device",
    "make_backend",
]
