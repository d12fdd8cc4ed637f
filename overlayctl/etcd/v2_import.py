"""Which of flanneld's v2 data becomes v3 keys, and what must refuse first (docs/design/adopt.md
3, 3.2): pure, from the parsed v2 dump (etcd/v2.py), the inventory and what v3 holds now.

Each v2 lease becomes a v3 key of the same subnet on its own etcd lease of 24 h (what an agent
holds), a v2 reservation a v3 key without one; the value is the agent's own encoding with
BackendType explicit (agents ignore a peer lease of another type, and flanneld 0.7's udp leases
carry none). The config is the inventory's, Backend explicit, written only if absent. Every
write is create-if-absent, so a re-run writes nothing; an existing v3 key of the same PublicIP is
already done, of another PublicIP a refusal: adopt never moves a host's subnet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.subnet.config import (
    BACKEND_DEFAULTS,
    ConfigError,
    NetworkConfig,
    config_key,
    parse_config,
)
from agent.subnet.layout import (
    LeaseDecodeError,
    decode_lease,
    encode_lease_value,
    subnet_key,
    subnets_dir,
)
from agent.subnet.lease import DEFAULT_TTL
from overlayctl.errors import Conflict
from overlayctl.etcd.v2 import V2Lease, V2Network, normal_prefix
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config
from overlayctl.text import plural

LEASE_TTL = DEFAULT_TTL  # 24 h, as flanneld's and the agent's own leases
V2RM = "ETCDCTL_API=2 etcdctl rm"
V3DEL = "ETCDCTL_API=3 etcdctl del"


class ImportRefused(Conflict):
    """The v2 data cannot be imported as it is (exit 4, nothing written); the one line names the
    key, host or field and the way forward."""


@dataclass(frozen=True)
class V3Write:
    """One create-if-absent put: KEY = VALUE, on a new etcd lease of TTL s (0: no lease)."""

    key: str
    value: str
    ttl: int
    public_ip: str = ""  # a subnet's, for the check after the writes ("": the config)


@dataclass(frozen=True)
class ImportPlan:
    """What ImportV2 writes; WANT: every subnet key the import owns -> its PublicIP (written
    now or already there), what makes the phase done."""

    writes: tuple[V3Write, ...] = ()
    want: tuple[tuple[str, str], ...] = ()
    lines: tuple[str, ...] = ()  # for `plan` and the progress lines: one per lease, stale, oddity

    @property
    def changes(self) -> int:
        return len(self.writes)

    def to_json(self) -> dict:
        """For `plan -o json`: each write (TTL 0: no lease), each subnet kept, the lines."""
        return {
            "writes": [{"key": w.key, "value": w.value, "ttl": w.ttl} for w in self.writes],
            "subnets": [{"key": key, "public_ip": ip} for key, ip in self.want],
            "lines": list(self.lines),
        }


def v3_config(inv: Inventory, v2_config: NetworkConfig) -> dict:
    """The config ImportV2 writes: the inventory's, Backend explicit, in the v2 backend (the same
    one unless --force, which adopts in the v2 backend and switches afterwards, design 3.4)."""
    config = network_config(inv)
    if _backend_options(_inventory_config(inv)) != _backend_options(v2_config):
        config["Backend"] = _backend_options(v2_config)
    return config


def _inventory_config(inv: Inventory) -> NetworkConfig:
    return parse_config(json.dumps(network_config(inv)))


def _backend_options(cfg: NetworkConfig) -> dict:
    """Backend's Type and every option that is not the agent's default (what makes two backends
    the same, and how a message or the written config shows one)."""
    defaults = BACKEND_DEFAULTS.get(cfg.backend_type, {})
    extra = {k: v for k, v in cfg.backend.items() if k not in defaults or defaults[k] != v}
    return {"Type": cfg.backend_type, **extra}


def _refuse(problems: list[str]) -> None:
    if problems:
        more = f" (and {plural(len(problems) - 1, 'more problem')})" if len(problems) > 1 else ""
        raise ImportRefused(problems[0] + more)


def check_config(v2: V2Network, inv: Inventory, force: bool) -> NetworkConfig:
    """The v2 config against the inventory's: network, subnet length and range must match
    (adopt never renumbers); the backend too, unless FORCE. Returns the v2 config."""
    prefix = normal_prefix(inv.cluster.etcd_prefix)
    if v2.prefix != prefix:
        raise ImportRefused(
            f"flanneld's v2 data is under {v2.prefix}, the inventory's "
            f"cluster.etcd_prefix is {prefix}: set etcd_prefix: {v2.prefix}"
        )
    if v2.config is None:
        why = v2.config_error or f"{v2.config_key} is absent in the v2 API"
        raise ImportRefused(
            f"{why}: flanneld cannot run without it; fix it by hand "
            "(ETCDCTL_API=2 etcdctl set ...) or remove the v2 leases, then re-run"
        )
    have, c = v2.config, inv.cluster
    for field, theirs, ours in (
        ("network", have.network, c.network),
        ("subnet_len", have.subnet_len, c.subnet_len),
        ("subnet_min", have.subnet_min, c.subnet_min),
        ("subnet_max", have.subnet_max, c.subnet_max),
    ):
        if theirs != ours:
            raise ImportRefused(
                f"{v2.config_key} (v2) says {field} {theirs}, the inventory's "
                f"cluster.{field} is {ours}: set {field}: {theirs} (adopt keeps "
                "every subnet, it never renumbers)"
            )
    ours = _backend_options(_inventory_config(inv))
    theirs = _backend_options(have)
    if theirs != ours and not force:
        raise ImportRefused(
            f"{v2.config_key} (v2) uses backend {_show(theirs)}, the inventory {_show(ours)}: "
            f"set cluster.backend: {have.backend_type} (and its options) to adopt as it is, or "
            f"re-run with --force to adopt in {have.backend_type} and then switch (traffic "
            "between switched and unswitched hosts stops during that roll)"
        )
    return have


def _show(backend: dict) -> str:
    extra = {k: v for k, v in backend.items() if k != "Type"}
    return backend["Type"] + (f" {json.dumps(extra, sort_keys=True)}" if extra else "")


def _config_write(inv: Inventory, v2_config: NetworkConfig, v3_value: str | None) -> V3Write | None:
    """The config's put, None when v3 has it already (the import's or the inventory's, as a
    --force switch leaves it); refused when v3 holds another."""
    key = config_key(inv.cluster.etcd_prefix)
    want = v3_config(inv, v2_config)
    if v3_value is None:
        return V3Write(key, json.dumps(want, separators=(",", ":")), 0)
    try:
        have = parse_config(v3_value)
    except ConfigError:
        have = None
    if have is not None and have in (parse_config(json.dumps(want)), _inventory_config(inv)):
        return None
    raise ImportRefused(
        f"etcd v3 key {key} holds another network config ({v3_value[:200]}) than "
        f"the v2 one to import: if nothing uses it yet, `{V3DEL} {key}` and re-run"
    )


def _stale_problems(
    leases: Iterable[V2Lease], inv: Inventory, config: NetworkConfig
) -> dict[str, str]:
    """key -> why a lease is no inventory host's (or outside the network): left out with
    --drop-stale, refused without."""
    hosts = {str(h.address) for h in inv.hosts}
    stale = {}
    for lease in leases:
        if not config.contains_subnet(lease.subnet):
            stale[lease.key] = (
                f"subnet {lease.subnet} lies outside {config.network} (SubnetMin "
                f"{config.subnet_min}, SubnetMax {config.subnet_max})"
            )
        elif str(lease.public_ip) not in hosts:
            stale[lease.key] = f"PublicIP {lease.public_ip} is no inventory host's address"
    return stale


def _duplicates(leases: Iterable[V2Lease]) -> list[str]:
    by_ip: dict[IPv4Address, list[V2Lease]] = {}
    for lease in leases:
        by_ip.setdefault(lease.public_ip, []).append(lease)
    return [
        f"PublicIP {ip} holds {len(group)} v2 subnets ({', '.join(x.key for x in group)}): "
        f"remove the stale one(s) (`{V2RM} KEY`; flanneld renews only the one it uses) and re-run"
        for ip, group in sorted(by_ip.items())
        if len(group) > 1
    ]


def _v3_subnets(prefix: str, kvs: Iterable[tuple[str, str, int]]) -> dict[str, str]:
    """v3 subnet key -> its PublicIP ("" when its value is no lease)."""
    out = {}
    subnets = subnets_dir(prefix)
    for key, value, lease_id in kvs:
        if key.startswith(subnets):
            try:
                out[key] = str(decode_lease(key, value, lease_id).public_ip)
            except LeaseDecodeError:
                out[key] = ""
    return out


def decide(
    v2: V2Network,
    inv: Inventory,
    v3: Iterable[tuple[str, str, int]],
    *,
    force: bool = False,
    drop_stale: bool = False,
) -> ImportPlan:
    """V2 against the inventory and V3 (every (key, value, lease id) under the prefix, as
    etcdctl.parse_kvs reads them) -> the writes, or ImportRefused (nothing is written then)."""
    if not v2.found or (v2.config_raw is None and not v2.leases):  # (a cut drop leaves dirs)
        ignored = tuple(f"ignored: {line}" for line in v2.unexpected)
        return ImportPlan(lines=(f"no flanneld config or lease under {v2.prefix} in the v2 API",
                                 *ignored))  # fmt: skip
    config = check_config(v2, inv, force)
    kvs = list(v3)
    prefix = inv.cluster.etcd_prefix
    values = {key: value for key, value, _ in kvs}
    v3_subnets = _v3_subnets(prefix, kvs)
    stale = _stale_problems(v2.leases, inv, config)
    problems = _duplicates(x for x in v2.leases if x.key not in stale)
    names = {str(h.address): h.name for h in inv.hosts}
    writes, want, lines = [], [], []
    conf = _config_write(inv, config, values.get(config_key(prefix)))
    lines.append(f"{config_key(prefix)}: " + (f"write {conf.value}" if conf else "in v3 already"))
    for lease in v2.leases:
        key, ip = subnet_key(prefix, lease.subnet), str(lease.public_ip)
        kind = "reservation" if lease.is_reservation else "lease"
        if lease.key in stale:
            if not drop_stale:
                problems.append(
                    f"v2 {kind} {lease.key}: {stale[lease.key]}: add its host to "
                    "the inventory, or re-run with --drop-stale to leave it out"
                )
            lines.append(f"{lease.subnet}: {ip}, stale ({stale[lease.key]}): left out")
            continue
        where = f"{lease.subnet}: {names[ip]} ({ip}), v2 {kind}{_left(lease)}"
        other = [k for k, owner in v3_subnets.items() if owner == ip and k != key]
        if other:
            problems.append(
                f"PublicIP {ip} ({names[ip]}) holds v3 key {other[0]} besides its "
                f"v2 {kind} {lease.key}: `{V3DEL} {other[0]}` and re-run"
            )
        if key in v3_subnets:
            if v3_subnets[key] != ip:
                problems.append(
                    f"etcd v3 key {key} belongs to PublicIP "
                    f"{v3_subnets[key] or '(no lease)'}, the v2 {kind} to {ip} "
                    f"({names[ip]}): `{V3DEL} {key}` if it is stale, and re-run"
                )
            lines.append(f"{where}: in v3 already")
        else:
            value = encode_lease_value(ip, config.backend_type, lease.backend_data).decode()
            ttl = 0 if lease.is_reservation else LEASE_TTL
            writes.append(V3Write(key, value, ttl, ip))
            lines.append(f"{where} -> v3 {kind}" + ("" if not ttl else " of 24 h"))
        want.append((key, ip))
    lines += [f"ignored: {line}" for line in v2.unexpected]
    _refuse(problems)
    return ImportPlan(tuple([conf] if conf else []) + tuple(writes), tuple(want), tuple(lines))


def _left(lease: V2Lease) -> str:
    if lease.ttl is None:
        return ""
    hours, rest = divmod(max(lease.ttl, 0), 3600)
    return f", {hours} h {rest // 60} min left"


def missing(plan: ImportPlan, kvs: Iterable[tuple[str, str, int]], prefix: str) -> list[str]:
    """The subnet keys of PLAN that v3 (KVS) does not hold with their PublicIP: [] is done."""
    have = _v3_subnets(prefix, kvs)
    return [
        f"{key} ({have.get(key) or 'absent'}, want {ip})"
        for key, ip in plan.want
        if have.get(key) != ip
    ]
