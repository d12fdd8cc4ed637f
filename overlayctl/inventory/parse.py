"""Per-field parsing of the inventory into the model (types, ranges, formats).

Cross-field rules (overlaps, duplicates, capacity, etcd member count) live in checks.py.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from pathlib import Path
from typing import Any

from overlayctl.errors import BadInput
from overlayctl.inventory.agent_options import check_agent_option
from overlayctl.inventory.fields import (
    Section,
    check_label,
    describe,
    is_label,
    local_path,
    parse_ipv4,
    suggest,
)
from overlayctl.inventory.model import (
    BACKEND_OPTIONS,
    BACKENDS,
    DEFAULT_ETCD_HOSTS,
    DEFAULT_ETCD_PREFIX,
    DEFAULT_KNOWN_HOSTS,
    DOCKER_MODES,
    OS_FAMILIES,
    ROLES,
    Cluster,
    Host,
    Ifcfg,
    Inventory,
    JumpHost,
    Ssh,
)
from overlayctl.inventory.network import flannel_defaults

# Options overlayctl derives from the inventory itself; agent_options may not set them.
_MANAGED_FLAGS = frozenset(
    {
        "--etcd-endpoints",
        "--etcd-prefix",
        "--etcd-cafile",
        "--etcd-certfile",
        "--etcd-keyfile",
        "--iface",
        "--public-ip",
        "--ip-masq",
        "--subnet-file",
    }
)
# `--flag` or `--flag=value`; the value has no blanks, quotes or shell metacharacters.
_AGENT_OPTION = re.compile(r"--[a-z][a-z0-9_-]*(?:=[A-Za-z0-9_./:,@%+=-]*)?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)+")
_IFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# Not usable as an overlay Network: this-network, loopback, link-local, multicast, reserved.
_SPECIAL_NETS = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
)


def parse_top(data: Any, base_dir: Path, source: Path | None) -> Inventory:
    if data is None:
        raise BadInput("top level: the inventory is empty")
    top = Section(data, "", ("cluster", "ssh", "hosts"), " with cluster, ssh and hosts")
    cluster = _cluster(Section(top.raw("cluster"), "cluster", _CLUSTER_KEYS))
    ssh = _ssh(Section(top.raw("ssh", {}), "ssh", _SSH_KEYS), base_dir)
    hosts = _hosts(top.raw("hosts"), cluster)
    return Inventory(source=source, cluster=cluster, ssh=ssh, hosts=hosts)


_CLUSTER_KEYS = (
    "name",
    "network",
    "subnet_len",
    "subnet_min",
    "subnet_max",
    "backend",
    "backend_options",
    "etcd_prefix",
    "tls",
    "legacy_client_port",
    "os",
    "ip_masq",
    "agent_options",
    "docker",
    "host_firewall",
)


def _network(sec: Section) -> ipaddress.IPv4Network:
    where, text = sec.at("network"), sec.string("network").strip()
    if "/" not in text:
        raise BadInput(f"{where}: {describe(text)} is not a CIDR such as 172.21.0.0/16")
    try:
        net = ipaddress.ip_network(text, strict=False)
        given = ipaddress.ip_address(text.split("/", 1)[0])
    except ValueError:
        raise BadInput(f"{where}: {describe(text)} is not an IPv4 CIDR") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise BadInput(f"{where}: {describe(text)} is not IPv4 (the overlay is IPv4 only)")
    if given != net.network_address:
        raise BadInput(f"{where}: {describe(text)} has host bits set (did you mean {net}?)")
    for special in _SPECIAL_NETS:
        if net.overlaps(special):
            raise BadInput(f"{where}: {net} overlaps the reserved range {special}")
    return net


def _subnet_bound(
    sec: Section, key: str, net: ipaddress.IPv4Network, subnet_len: int, default: Any
) -> ipaddress.IPv4Address:
    if not sec.has(key):
        return default
    where = sec.at(key)
    addr = parse_ipv4(sec.string(key), where)
    if addr not in net:
        raise BadInput(f"{where}: {addr} is not in the range of cluster.network {net}")
    if int(addr) % (1 << (32 - subnet_len)):
        raise BadInput(f"{where}: {addr} is not on a /{subnet_len} (subnet_len) boundary")
    return addr


def _cluster(sec: Section) -> Cluster:
    name = check_label(sec.string("name"), sec.at("name"))
    net = _network(sec)
    if net.prefixlen > 28:
        raise BadInput(
            f"{sec.at('network')}: {net} is too small: it must hold at least four subnets of at "
            "most /30"
        )
    subnet_len = sec.integer("subnet_len", None, lo=0, hi=32)
    if subnet_len is not None and subnet_len > 30:
        raise BadInput(f"{sec.at('subnet_len')}: {subnet_len} must be less than 31")
    if subnet_len is not None and subnet_len < net.prefixlen + 2:
        raise BadInput(
            f"{sec.at('subnet_len')}: {subnet_len} is too short for cluster.network {net}: it "
            f"must be at least {net.prefixlen + 2} so the network holds at least four subnets"
        )
    subnet_len, first, last = flannel_defaults(net, subnet_len)
    subnet_min = _subnet_bound(sec, "subnet_min", net, subnet_len, first)
    subnet_max = _subnet_bound(sec, "subnet_max", net, subnet_len, last)
    if subnet_min > subnet_max:
        raise BadInput(f"{sec.at('subnet_min')}: {subnet_min} is above subnet_max {subnet_max}")
    backend = sec.choice("backend", BACKENDS, "vxlan")
    prefix = sec.string("etcd_prefix", DEFAULT_ETCD_PREFIX)
    if not _PREFIX.fullmatch(prefix) or "/./" in prefix + "/" or "/../" in prefix + "/":
        raise BadInput(
            f"{sec.at('etcd_prefix')}: {describe(prefix)} is not a key prefix such as "
            f"{DEFAULT_ETCD_PREFIX} (a leading '/', no trailing '/', letters, digits, . _ -)"
        )
    docker = Section(sec.raw("docker", {}), sec.at("docker"), ("mode",))
    return Cluster(
        name=name,
        network=net,
        subnet_len=subnet_len,
        subnet_min=subnet_min,
        subnet_max=subnet_max,
        backend=backend,
        backend_options=_backend_options(sec, backend),
        etcd_prefix=prefix,
        tls=sec.boolean("tls", True),
        legacy_client_port=sec.boolean("legacy_client_port", False),
        os=sec.choice("os", OS_FAMILIES, None),
        ip_masq=sec.boolean("ip_masq", False),
        agent_options=_agent_options(sec),
        docker_mode=docker.choice("mode", DOCKER_MODES, "dropin"),
        host_firewall=sec.boolean("host_firewall", True),
    )


def _backend_options(sec: Section, backend: str) -> tuple[tuple[str, int | bool], ...]:
    specs = BACKEND_OPTIONS[backend]
    raw = sec.raw("backend_options", {})
    where = sec.at("backend_options")
    if isinstance(raw, dict):
        for key in raw:
            if key not in specs:
                known = ", ".join(sorted(specs)) or "none"
                raise BadInput(
                    f"{where}.{key}: not an option of the {backend} backend{suggest(key, specs)}"
                    f"; its options: {known}"
                )
    opts = Section(raw, where, specs)
    values: list[tuple[str, int | bool]] = []
    for key, spec in sorted(specs.items()):
        if not opts.has(key):
            continue
        if spec.kind is bool:
            values.append((key, opts.boolean(key)))
        else:
            values.append((key, opts.integer(key, lo=spec.lo, hi=spec.hi)))
    return tuple(values)


def _agent_options(sec: Section) -> tuple[str, ...]:
    result = []
    for where, option in sec.strings("agent_options", []):
        if not _AGENT_OPTION.fullmatch(option):
            raise BadInput(
                f"{where}: {describe(option)} is not an option of the form --name or "
                "--name=value (no blanks, quotes or shell characters)"
            )
        flag = option.split("=", 1)[0].replace("_", "-")
        if flag in _MANAGED_FLAGS:
            raise BadInput(f"{where}: {flag} is set by overlayctl from the inventory")
        check_agent_option(where, flag, option.split("=", 1)[1] if "=" in option else None)
        result.append(option)
    return tuple(result)


_SSH_KEYS = ("user", "port", "key", "known_hosts", "sudo", "jump")


def _ssh(sec: Section, base_dir: Path) -> Ssh:
    user = sec.string("user", "root")
    if not _USER.fullmatch(user):
        raise BadInput(f"{sec.at('user')}: {describe(user)} is not a valid user name")
    return Ssh(
        user=user,
        port=sec.integer("port", 22, lo=1, hi=65535),
        key=sec.path("key", base_dir, None),
        known_hosts=sec.path("known_hosts", base_dir, None)
        or local_path(DEFAULT_KNOWN_HOSTS, base_dir),
        sudo=sec.boolean("sudo", False),
        jump=_jump(sec),
    )


_JUMP = re.compile(r"(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>[0-9]{1,5}))?")
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _jump(sec: Section) -> JumpHost | None:
    text = sec.string("jump", None)
    if text is None:
        return None
    where = sec.at("jump")
    match = _JUMP.fullmatch(text)
    bad = f"{where}: {describe(text)} is not [user@]host[:port]"
    if not match or not _DNS_NAME.fullmatch(match["host"]) or ".." in match["host"]:
        raise BadInput(bad)
    if match["user"] is not None and not _USER.fullmatch(match["user"]):
        raise BadInput(f"{bad} (bad user name)")
    port = int(match["port"]) if match["port"] else 22
    if not 1 <= port <= 65535:
        raise BadInput(f"{bad} (port out of range 1..65535)")
    return JumpHost(user=match["user"], host=match["host"], port=port)


_HOST_KEYS = ("name", "address", "iface", "roles", "os", "ifcfg")


def _hosts(raw: Any, cluster: Cluster) -> tuple[Host, ...]:
    if not isinstance(raw, list):
        raise BadInput(f"hosts: expected a list of hosts, got {describe(raw)}")
    if not raw:
        raise BadInput("hosts: the list is empty; give at least one host")
    explicit_roles = any(isinstance(item, dict) and item.get("roles") is not None for item in raw)
    hosts = []
    for index, item in enumerate(raw):
        if explicit_roles:
            default_roles: tuple[str, ...] = ("node",)
        else:
            default_roles = ("etcd", "node") if index < DEFAULT_ETCD_HOSTS else ("node",)
        hosts.append(_host(index, item, cluster, default_roles))
    return tuple(hosts)


def _host(index: int, raw: Any, cluster: Cluster, default_roles: tuple[str, ...]) -> Host:
    where = f"hosts[{index}]"
    if isinstance(raw, dict) and is_label(raw.get("name")):
        where = f"hosts[{index}] ({raw['name']})"
    sec = Section(raw, where, _HOST_KEYS)
    name = check_label(sec.string("name"), sec.at("name"))
    address = parse_ipv4(sec.string("address"), sec.at("address"))
    if address.is_loopback or address.is_multicast or address.is_unspecified:
        raise BadInput(f"{sec.at('address')}: {address} cannot be a host's underlay address")
    iface = sec.string("iface", None)
    if iface is not None and (not _IFACE.fullmatch(iface) or iface in {".", ".."}):
        raise BadInput(
            f"{sec.at('iface')}: {describe(iface)} is not an interface name (1-15 of letters, "
            "digits, _ . -)"
        )
    ifcfg = None
    if sec.has("ifcfg"):
        if iface is None:
            raise BadInput(f"{sec.at('iface')}: required when ifcfg is given")
        ifcfg = _ifcfg(Section(sec.raw("ifcfg"), sec.at("ifcfg"), _IFCFG_KEYS), address)
    return Host(
        index=index,
        name=name,
        address=address,
        iface=iface,
        roles=_roles(sec, default_roles),
        os=sec.choice("os", OS_FAMILIES, None) or cluster.os,
        ifcfg=ifcfg,
    )


def _roles(sec: Section, default: tuple[str, ...]) -> tuple[str, ...]:
    items = sec.strings("roles", None)
    if items is None:
        return default
    if not items:
        raise BadInput(f"{sec.at('roles')}: empty; give etcd, node or both")
    roles: list[str] = []
    for where, role in items:
        if role not in ROLES:
            raise BadInput(
                f"{where}: {describe(role)} is not a role (etcd or node){suggest(role, ROLES)}"
            )
        if role in roles:
            raise BadInput(f"{where}: {role} is listed twice")
        roles.append(role)
    return tuple(r for r in ROLES if r in roles)


_IFCFG_KEYS = ("prefix", "gateway", "dns", "uuid")


def _ifcfg(sec: Section, address: ipaddress.IPv4Address) -> Ifcfg:
    prefix = sec.integer("prefix", lo=1, hi=31)
    subnet = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    if prefix < 31 and address in (subnet.network_address, subnet.broadcast_address):
        raise BadInput(
            f"{sec.at('prefix')}: /{prefix} makes the host's address {address} the network or "
            f"broadcast address of {subnet}"
        )
    gateway = None
    if sec.has("gateway"):
        gateway = parse_ipv4(sec.string("gateway"), sec.at("gateway"))
        if gateway not in subnet:
            raise BadInput(f"{sec.at('gateway')}: {gateway} is not inside {subnet}")
        if gateway == address:
            raise BadInput(f"{sec.at('gateway')}: {gateway} is the host's own address")
    dns = tuple(parse_ipv4(value, where) for where, value in sec.strings("dns", []))
    conn_uuid = None
    if sec.has("uuid"):
        try:
            conn_uuid = uuid.UUID(sec.string("uuid"))
        except ValueError:
            raise BadInput(f"{sec.at('uuid')}: {describe(sec.raw('uuid'))} is not a UUID") from None
    return Ifcfg(prefix=prefix, gateway=gateway, dns=dns, uuid=conn_uuid)
