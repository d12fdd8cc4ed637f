"""flannel's lease layout in etcd: the keys under ``<prefix>/subnets/``, the value JSON and the
:class:`Lease` record decoded from them.

Pure: :mod:`agent.subnet.lease` and :mod:`agent.subnet.watch` do the etcd side and both decode
with this module; overlayctl reads leases the same way (status, reset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any


class LeaseDecodeError(ValueError):
    """A key or value under ``<prefix>/subnets/`` is not a flannel lease."""


@dataclass(frozen=True)
class Lease:
    """One subnet lease (``lease_id`` 0 = a reservation, a key without TTL)."""

    subnet: IPv4Network
    public_ip: IPv4Address
    backend_type: str
    backend_data: Mapping[str, Any] | None = None
    lease_id: int = 0
    mod_revision: int = 0
    key: str = ""

    @property
    def is_reservation(self) -> bool:
        """A key written without an etcd lease never expires and belongs to its PublicIP."""
        return self.lease_id == 0

    def same_attrs(self, other: Lease) -> bool:
        """Same subnet, PublicIP and backend (what a data plane programs)."""
        return (self.subnet, self.public_ip, self.backend_type, self._data()) == (
            other.subnet,
            other.public_ip,
            other.backend_type,
            other._data(),
        )

    def _data(self) -> str:
        return json.dumps(dict(self.backend_data or {}), sort_keys=True)


def subnets_dir(prefix: str) -> str:
    """``<prefix>/subnets/`` with exactly one slash between the parts."""
    return prefix.rstrip("/") + "/subnets/"


def subnet_key(prefix: str, subnet: IPv4Network) -> str:
    """flannel's key for a subnet: ``<prefix>/subnets/10.1.31.0-24``."""
    return f"{subnets_dir(prefix)}{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> IPv4Network:
    """The subnet named by a key (or its last element) such as ``.../10.1.31.0-24``."""
    name = key.rsplit("/", 1)[-1]
    addr, sep, length = name.partition("-")
    if not sep or not length.isdigit():
        raise LeaseDecodeError(f"not a subnet key: {key!r}")
    try:
        return IPv4Network(f"{addr}/{int(length)}")
    except ValueError as exc:
        raise LeaseDecodeError(f"not a subnet key: {key!r}") from exc


def encode_lease_value(
    public_ip: IPv4Address | str, backend_type: str, backend_data: Mapping[str, Any] | None
) -> bytes:
    """The value flannel writes: compact JSON, BackendData left out when there is none."""
    value: dict[str, Any] = {"PublicIP": str(public_ip), "BackendType": backend_type}
    if backend_data is not None:
        value["BackendData"] = dict(backend_data)
    return json.dumps(value, separators=(",", ":")).encode()


def decode_lease(key: str, value: bytes | str, lease_id: int = 0, mod_revision: int = 0) -> Lease:
    """Parse one ``<prefix>/subnets/`` entry; :class:`LeaseDecodeError` if it is not a lease."""
    subnet = parse_subnet_key(key)
    try:
        data = json.loads(value)
    except (ValueError, TypeError) as exc:
        raise LeaseDecodeError(f"{key}: value is not JSON") from exc
    if not isinstance(data, dict):
        raise LeaseDecodeError(f"{key}: value is not a JSON object")
    fields = {str(k).lower(): v for k, v in data.items()}
    try:
        public_ip = IPv4Address(str(fields.get("publicip")))
    except ValueError as exc:
        raise LeaseDecodeError(f"{key}: PublicIP missing or invalid") from exc
    backend_type = fields.get("backendtype") or ""
    backend_data = fields.get("backenddata")
    if not isinstance(backend_type, str) or (
        backend_data is not None and not isinstance(backend_data, dict)
    ):
        raise LeaseDecodeError(f"{key}: BackendType or BackendData malformed")
    return Lease(
        subnet=subnet,
        public_ip=public_ip,
        backend_type=backend_type,
        backend_data=MappingProxyType(backend_data) if backend_data is not None else None,
        lease_id=lease_id,
        mod_revision=mod_revision,
        key=key,
    )
