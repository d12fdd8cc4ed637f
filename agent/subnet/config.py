"""flannel's network configuration (``<prefix>/config``): parse, default and validate.

Same rules as flannel (keys match case-insensitively, the same defaults, the same error
wording), with one deliberate difference: a missing ``Backend`` means ``vxlan`` (flannel
silently falls back to the slow ``udp``), and we log it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "vxlan"
# Backend type -> {canonical key: default}. Keys not listed are kept as written.
BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "vxlan": {"VNI": 1, "Port": 8472, "GBP": False, "DirectRouting": False, "Learning": False},
    "host-gw": {},
    # Batching (ours, opt-in, both ends must agree): TUN offloads and one datagram per
    # super-packet instead of flannel's one IPv4 packet per datagram; see
    # agent/backends/udp/backend.py.
    "udp": {"Port": 8285, "Batching": False},
}
_BACKEND_INTS = {"VNI", "Port", "MTU"}
_BACKEND_BOOLS = {"Batching"}
_TOP_KEYS = (
    "Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "Backend",
    "EnableIPv4",
    "EnableIPv6",
    "IPv6Network",
)


class ConfigError(ValueError):
    """The network config cannot be used; the message says why (flannel's wording)."""


@dataclass(frozen=True)
class NetworkConfig:
    """A validated network config with every default filled in."""

    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend_type: str
    backend: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipv6_network: str | None = None

    @property
    def subnet_size(self) -> int:
        """Addresses per subnet."""
        return 1 << (32 - self.subnet_len)

    def contains_subnet(self, subnet: IPv4Network) -> bool:
        """True if ``subnet`` is a SubnetLen subnet between SubnetMin and SubnetMax."""
        return (
            subnet.prefixlen == self.subnet_len
            and self.subnet_min <= subnet.network_address <= self.subnet_max
        )

    def to_json(self) -> dict[str, Any]:
        """flannel-style JSON for this config (defaults included)."""
        out: dict[str, Any] = {
            "Network": str(self.network),
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min),
            "SubnetMax": str(self.subnet_max),
            "Backend": {"Type": self.backend_type, **dict(self.backend)},
        }
        if self.enable_ipv6:
            out["EnableIPv6"] = True
            out["IPv6Network"] = self.ipv6_network
        return out


def _fold(obj: Mapping[str, Any], known: tuple[str, ...] | set[str]) -> dict[str, Any]:
    """Map keys case-insensitively onto canonical names; like Go, the last match wins."""
    canon = {k.lower(): k for k in known}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[canon.get(str(key).lower(), str(key))] = value
    return out


def _ip4(value: Any, name: str) -> IPv4Address | None:
    if value is None or value == "":
        return None
    try:
        return IPv4Address(str(value))
    except ValueError as exc:
        raise ConfigError(f"invalid {name} {value!r}: not an IPv4 address") from exc


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"invalid {name} {value!r}: not an integer")
    return int(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"invalid {name} {value!r}: not a boolean")
    return value


def _network(value: Any) -> IPv4Network:
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError("please define a correct Network parameter in the flannel config")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(
            "please define a correct Network parameter in the flannel config"
        ) from exc
    if not isinstance(net, IPv4Network) or net.prefixlen == 0:
        raise ConfigError("please define a correct Network parameter in the flannel config")
    return net


def _backend(raw: Any) -> tuple[str, Mapping[str, Any]]:
    if raw is None:
        log.warning("config has no Backend: using %s (flannel would use udp)", DEFAULT_BACKEND)
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("error decoding Backend property of config: not a JSON object")
    all_keys = {"Type"} | {k for d in BACKEND_DEFAULTS.values() for k in d} | _BACKEND_INTS
    folded = _fold(raw, all_keys)
    btype = folded.pop("Type", None)
    if btype in (None, ""):
        log.warning("config Backend has no Type: using %s", DEFAULT_BACKEND)
        btype = DEFAULT_BACKEND
    if not isinstance(btype, str) or btype.lower() not in BACKEND_DEFAULTS:
        raise ConfigError(
            f"unknown backend type: {btype} (overlay-agent supports "
            + ", ".join(BACKEND_DEFAULTS)
            + ")"
        )
    btype = btype.lower()
    options = dict(BACKEND_DEFAULTS[btype])
    options.update(folded)
    for key in _BACKEND_INTS & options.keys():
        options[key] = _int(options[key], f"Backend.{key}")
    for key in _BACKEND_BOOLS & options.keys():
        options[key] = _bool(options[key], f"Backend.{key}")
    if "Port" in options and not 0 <= options["Port"] <= 65535:
        raise ConfigError(f"invalid Backend.Port {options['Port']}")
    if "VNI" in options and not 0 <= options["VNI"] < (1 << 24):
        raise ConfigError(f"invalid Backend.VNI {options['VNI']}")
    return btype, MappingProxyType(options)


def _subnet_len(network: IPv4Network, raw: Any) -> int:
    """SubnetLen as flannel validates or defaults it."""
    subnet_len = _int(raw, "SubnetLen") if raw not in (None, 0) else 0
    if subnet_len > 0:
        if subnet_len > 30:
            raise ConfigError("SubnetLen must be less than /31")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError("network must be able to accommodate at least four subnets")
        return subnet_len
    if subnet_len < 0:
        raise ConfigError("SubnetLen must be less than /31")
    if network.prefixlen > 28:
        raise ConfigError("network is too small. Minimum useful network prefix is /28")
    return 24 if network.prefixlen <= 22 else network.prefixlen + 2


def _subnet_range(
    network: IPv4Network, subnet_len: int, cfg: Mapping[str, Any]
) -> tuple[IPv4Address, IPv4Address]:
    """SubnetMin and SubnetMax: defaults skip the first subnet and end at the last one."""
    size = 1 << (32 - subnet_len)
    bounds: list[IPv4Address] = []
    for name, default in (
        ("SubnetMin", int(network.network_address) + size),
        ("SubnetMax", int(network.broadcast_address) + 1 - size),
    ):
        value = _ip4(cfg.get(name), name)
        if value is None:
            value = IPv4Address(default)
        elif value not in network:
            raise ConfigError(f"{name} is not in the range of the Network")
        bounds.append(value)
    for name, value in zip(("SubnetMin", "SubnetMax"), bounds):
        if int(value) % size:
            raise ConfigError(f"{name} is not on a SubnetLen boundary: {value}")
    if bounds[0] > bounds[1]:
        raise ConfigError(f"SubnetMin {bounds[0]} is above SubnetMax {bounds[1]}")
    return bounds[0], bounds[1]


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse and validate the JSON stored at ``<prefix>/config``.

    Raises :class:`ConfigError` for anything unusable (never another exception).
    """
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("config is not a JSON object")
    cfg = _fold(data, _TOP_KEYS)
    enable_ipv4 = _bool(cfg.get("EnableIPv4", True), "EnableIPv4")
    enable_ipv6 = _bool(cfg.get("EnableIPv6", False), "EnableIPv6")
    if not enable_ipv4:
        raise ConfigError("EnableIPv4 false is not supported: overlay-agent needs an IPv4 Network")
    ipv6 = cfg.get("IPv6Network")
    if enable_ipv6:
        log.warning("EnableIPv6 is set: IPv6 is not supported yet, only the IPv4 Network is used")

    network = _network(cfg.get("Network"))
    subnet_len = _subnet_len(network, cfg.get("SubnetLen"))
    subnet_min, subnet_max = _subnet_range(network, subnet_len, cfg)
    btype, options = _backend(cfg.get("Backend"))
    return NetworkConfig(
        network=network,
        subnet_len=subnet_len,
        subnet_min=subnet_min,
        subnet_max=subnet_max,
        backend_type=btype,
        backend=options,
        enable_ipv4=enable_ipv4,
        enable_ipv6=enable_ipv6,
        ipv6_network=str(ipv6) if ipv6 else None,
    )


def config_key(prefix: str) -> str:
    """``<prefix>/config``."""
    return prefix.rstrip("/") + "/config"
