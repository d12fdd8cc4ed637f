"""flanneld's v2 data (a hand-built cluster's network config and leases), read from one etcd v2
answer: `GET /v2/keys<prefix>?recursive=true` (remote/scripts/etcd_v2_dump.py prints it).

Pure: no I/O. flanneld 0.7 reads its config with its own defaults, which are not our agent's:
no `Backend` means udp (agent/subnet/config.py would say vxlan), so the config is read here as
flanneld read it. Leases are decoded by the agent's own decoder (agent/subnet/layout.py), so what
is imported is what agents accept. Anything else under the prefix is reported, never a crash:
a hand-built cluster may hold anything, and adopt must say what it found. The only error is
V2DumpError, for an answer that is not etcd's v2 JSON at all.

The import decision (what to write into v3, or why not) is in etcd/v2_import.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.subnet.config import ConfigError, NetworkConfig, parse_config
from agent.subnet.layout import LeaseDecodeError, decode_lease
from overlayctl.errors import OverlayctlError

FLANNEL_07_BACKEND = "udp"  # flanneld 0.7's backend when the config names none
KEY_NOT_FOUND = 100  # etcd v2's errorCode for a missing key or directory
MAX_NODES = 100_000  # a bound on the walk: a /16 holds at most 65536 subnets


class V2DumpError(OverlayctlError):
    """The text is not etcd's v2 answer for the prefix (one line, never a traceback)."""


@dataclass(frozen=True)
class V2Node:
    """One key or directory of the dump, with the index a compare-and-delete needs."""

    key: str
    dir: bool
    modified_index: int


@dataclass(frozen=True)
class V2Lease:
    """One `<prefix>/subnets/a.b.c.d-len` key. TTL None: a reservation (a key without TTL)."""

    key: str
    subnet: IPv4Network
    public_ip: IPv4Address
    backend_type: str  # "" when the value has none (flanneld 0.7's udp leases)
    backend_data: Mapping[str, Any] | None
    ttl: int | None
    expiration: str | None
    modified_index: int = 0

    @property
    def is_reservation(self) -> bool:
        return self.ttl is None


@dataclass(frozen=True)
class V2Network:
    """What the v2 key space holds under PREFIX.

    CONFIG is the config as flanneld 0.7 reads it (None when absent or unusable: CONFIG_ERROR
    says why when present); UNEXPECTED names every other key and why it was not understood."""

    prefix: str
    config_raw: str | None = None
    config: NetworkConfig | None = None
    config_error: str = ""
    leases: tuple[V2Lease, ...] = ()
    unexpected: tuple[str, ...] = ()
    nodes: tuple[V2Node, ...] = ()  # every key and directory under the prefix, the prefix's too

    @property
    def found(self) -> bool:
        """Anything at all under the prefix (a hand-built cluster's mark)."""
        return bool(self.nodes)

    @property
    def config_key(self) -> str:
        return f"{self.prefix}/config"


def normal_prefix(prefix: str) -> str:
    """`/atomic.io/network` with one leading slash and none at the end, as etcd v2 keys read."""
    return "/" + prefix.strip("/")


def flannel07_config(text: str) -> NetworkConfig:
    """The config as flanneld 0.7 reads it (its subnet/config.go), where that differs from the
    agent's parser: no Backend (or null) means udp; a Backend without a Type is an error there
    (parseBackendType returns "" and no backend has that name); no SubnetLen means /24, or half
    the Network when that is /24 or smaller (later flannels: Network + 2 past /22). The agent's
    parser checks the rest, and raises ConfigError for what it cannot run (e.g. the single
    subnet 0.7 makes of a /23)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return parse_config(text)  # raises the agent's ConfigError, in its words
    backend = _field(data, "Backend")
    if backend is None:
        data = _with(data, "Backend", {"Type": FLANNEL_07_BACKEND})
    elif isinstance(backend, dict) and _field(backend, "Type") is None:
        raise ConfigError("Backend has no Type: flanneld 0.7 would not start with this config")
    network = _field(data, "Network")
    if _field(data, "SubnetLen") in (None, 0) and isinstance(network, str):
        with contextlib.suppress(ValueError):  # the agent's parser says what is wrong with it
            prefixlen = IPv4Network(network.strip(), strict=False).prefixlen
            data = _with(data, "SubnetLen", 24 if prefixlen < 24 else prefixlen + 1)
    return parse_config(json.dumps(data))


def _field(data: dict[str, Any], name: str) -> Any:
    """DATA's NAME as Go's JSON decoder finds it: case-insensitively, the last match winning."""
    found = [v for k, v in data.items() if str(k).lower() == name.lower()]
    return found[-1] if found else None


def _with(data: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """DATA with NAME (in any case) set to VALUE."""
    return {**{k: v for k, v in data.items() if str(k).lower() != name.lower()}, name: value}


def parse_dump(json_text: str | bytes, prefix: str) -> V2Network:
    """etcd's answer to `GET /v2/keys<PREFIX>?recursive=true` (or to the same for a directory
    above PREFIX, up to the whole key space `/v2/keys/`) -> what PREFIX holds.

    etcd's "Key not found" (errorCode 100) is an empty prefix, as is an answer for a directory
    above PREFIX without it. V2DumpError when the text is not JSON, is another etcd error, or
    answers for a key that is not PREFIX or above it."""
    prefix = normal_prefix(prefix)
    try:
        doc = json.loads(json_text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise V2DumpError(f"etcd v2 dump of {prefix}: not JSON ({_short(exc)})") from None
    if not isinstance(doc, dict):
        raise V2DumpError(f"etcd v2 dump of {prefix}: not a JSON object")
    if "errorCode" in doc:
        if doc.get("errorCode") == KEY_NOT_FOUND:
            return V2Network(prefix)
        raise V2DumpError(f"etcd v2 dump of {prefix}: etcd error {_short(doc.get('errorCode'))}: "
                          f"{_short(doc.get('message'))}")  # fmt: skip
    node = _subtree(doc.get("node"), prefix)
    return V2Network(prefix) if node is None else _Walk(prefix).run(node)


def _subtree(node: Any, prefix: str) -> dict[str, Any] | None:
    """PREFIX's node inside NODE (PREFIX's own, or a directory's above it; the root has no key),
    None when that directory does not hold PREFIX."""
    for _ in range(prefix.count("/") + 1):
        key = node.get("key", "/") if isinstance(node, dict) else None
        if key == prefix:
            return node
        if not isinstance(key, str) or not prefix.startswith(key.rstrip("/") + "/"):
            raise V2DumpError(f"etcd v2 dump of {prefix}: no node for {prefix} in the answer")
        children = node.get("nodes") if node.get("dir") is True else None
        below = [c for c in children if _leads_to(c, prefix)] if isinstance(children, list) else []
        if not below:
            return None
        node = below[0]
    return None


def _leads_to(node: Any, prefix: str) -> bool:
    key = node.get("key") if isinstance(node, dict) else None
    return isinstance(key, str) and (key == prefix or prefix.startswith(key + "/"))


class _Walk:
    """One pass over the node tree (iterative: a hostile dump nests as deep as it likes)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[V2Node] = []
        self.leases: list[V2Lease] = []
        self.unexpected: list[str] = []
        self.config_raw: str | None = None
        self.config: NetworkConfig | None = None
        self.config_error = ""

    def run(self, top: dict[str, Any]) -> V2Network:
        stack: list[Any] = [top]
        while stack:
            node = stack.pop()
            if len(self.nodes) >= MAX_NODES:
                self.unexpected.append(f"{self.prefix}: more than {MAX_NODES} keys; the rest "
                                       "was not read")  # fmt: skip
                break
            if not isinstance(node, dict) or not isinstance(node.get("key"), str):
                self.unexpected.append(f"{self.prefix}: a node that is no etcd v2 node")
                continue
            key, is_dir = node["key"], node.get("dir") is True
            index = node.get("modifiedIndex")
            self.nodes.append(V2Node(key, is_dir, index if _is_int(index) else 0))
            if key != self.prefix and not key.startswith(self.prefix + "/"):
                self.unexpected.append(f"{_short(key)}: outside {self.prefix}")
            elif is_dir:
                children = node.get("nodes", [])
                if not isinstance(children, list):
                    self.unexpected.append(f"{_short(key)}: a directory without a node list")
                    continue
                if not children and key not in (self.prefix, self.prefix + "/subnets"):
                    self.unexpected.append(f"{_short(key)}/: an empty directory")
                stack.extend(reversed(children))
            else:
                self._leaf(key, node)
        return V2Network(
            prefix=self.prefix,
            config_raw=self.config_raw,
            config=self.config,
            config_error=self.config_error,
            leases=tuple(sorted(self.leases, key=lambda x: int(x.subnet.network_address))),
            unexpected=tuple(self.unexpected),
            nodes=tuple(self.nodes),
        )

    def _leaf(self, key: str, node: dict[str, Any]) -> None:
        value = node.get("value")
        rel = key[len(self.prefix) + 1 :]
        if not isinstance(value, str):
            self.unexpected.append(f"{_short(key)}: a key without a text value")
        elif rel == "config":
            self.config_raw = value
            try:
                self.config = flannel07_config(value)
            except ConfigError as exc:
                self.config_error = f"{key}: {_short(exc)}"
        elif rel.startswith("subnets/") and "/" not in rel[len("subnets/") :]:
            self._lease(key, value, node)
        else:
            self.unexpected.append(f"{_short(key)}: not flanneld's (config or subnets/)")

    def _lease(self, key: str, value: str, node: dict[str, Any]) -> None:
        try:
            lease = decode_lease(key, value)
        except (LeaseDecodeError, RecursionError) as exc:
            self.unexpected.append(f"{_short(key)}: not a flannel lease ({_short(exc)})")
            return
        ttl, index = node.get("ttl"), node.get("modifiedIndex")
        expiration = node.get("expiration")
        self.leases.append(
            V2Lease(
                key=key,
                subnet=lease.subnet,
                public_ip=lease.public_ip,
                backend_type=lease.backend_type,
                backend_data=lease.backend_data,
                ttl=ttl if _is_int(ttl) else None,
                expiration=expiration if isinstance(expiration, str) else None,
                modified_index=index if _is_int(index) else 0,
            )
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 120) -> str:
    """A value for a one-line message: printable, bounded."""
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
