"""The admin's allow-list of PublicIPs: ``<prefix>/allowed-public-ips``.

Value: ``{"PublicIPs": ["192.168.255.11", ...]}``, written by the operator (overlayctl) with the
admin identity only; host identities may read it. Without the key every lease is accepted
(flannel's behaviour). With it, a remote lease whose PublicIP is not listed is refused: a
compromised member that may write under ``<prefix>/subnets/`` still cannot point a subnet
at an address outside the cluster. Our own lease is never refused (its PublicIP missing
from the list means the operator's inventory is wrong: one ERROR line, nothing else).

How the agent follows the key: read in the start snapshot with the leases, then a watch of
this one key (a host role may read it; a watch of the whole prefix would need read access to
every key under it), whose events :meth:`AllowList.load` applies: no read per batch of lease
events. If etcd refuses that watch, the key is read every ``--allowlist-check-interval``
(60 s) instead. Pure except :meth:`AllowList.refresh`, which reads through the client given.
"""

from __future__ import annotations

import json
import logging
from ipaddress import AddressValueError, IPv4Address
from typing import Any

from agent.etcd import EtcdClient, EtcdError, KeyValue
from agent.subnet.layout import Lease

log = logging.getLogger(__name__)

ALLOWLIST_NAME = "allowed-public-ips"


class AllowListError(ValueError):
    """The key's value is not ``{"PublicIPs": [IPv4 addresses]}``."""


def allowlist_key(prefix: str) -> str:
    """``<prefix>/allowed-public-ips``."""
    return f"{prefix.rstrip('/')}/{ALLOWLIST_NAME}"


def parse_allowlist(value: bytes | str) -> frozenset[IPv4Address]:
    """The PublicIPs of the key's VALUE; AllowListError names what is wrong."""
    try:
        doc: Any = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AllowListError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("PublicIPs"), list):
        raise AllowListError('expected {"PublicIPs": [...]}')
    ips: set[IPv4Address] = set()
    for item in doc["PublicIPs"]:
        if not isinstance(item, str):
            raise AllowListError(f"PublicIPs: {item!r} is not an IPv4 address")
        try:
            ips.add(IPv4Address(item))
        except AddressValueError:
            raise AllowListError(f"PublicIPs: {item!r} is not an IPv4 address") from None
    return frozenset(ips)


class AllowList:
    """The current list (None: no key, every lease admitted) and who it refuses."""

    def __init__(self, prefix: str, own_public_ip: IPv4Address | None = None) -> None:
        self.key = allowlist_key(prefix)
        self.own_public_ip = own_public_ip
        self.ips: frozenset[IPv4Address] | None = None
        self.revision = -1  # mod_revision of the value in force (0: absent)
        self.errors = 0
        self._warned: set[tuple[str, IPv4Address]] = set()

    def admits(self, lease: Lease) -> bool:
        """True when LEASE may be programmed (always without a list)."""
        return self.ips is None or lease.public_ip in self.ips

    def refresh(self, client: EtcdClient) -> bool:
        """Read the key again; True if the list in force changed. A read failure or a bad
        value keeps the list in force (logged): a flapping etcd must not open or close the
        data plane."""
        try:
            kv = client.get(self.key)
        except EtcdError as exc:
            self.errors += 1
            log.warning("cannot read %s: %s; keeping the list in force", self.key, exc)
            return False
        return self.load(kv)

    def load(self, kv: KeyValue | None) -> bool:
        """The key's value as read (None: absent) from a snapshot or a watch event; True if
        the list in force changed. A bad value keeps the list in force (logged)."""
        revision = kv.mod_revision if kv is not None else 0
        if revision == self.revision:
            return False
        self.revision = revision
        if kv is None:
            ips = None
        else:
            try:
                ips = parse_allowlist(kv.value)
            except AllowListError as exc:
                self.errors += 1
                log.error("%s: %s; keeping the list in force", self.key, exc)
                return False
        changed, self.ips = ips != self.ips, ips
        if changed:
            self._announce()
        return changed

    def _announce(self) -> None:
        if self.ips is None:
            log.info("%s absent: every lease is accepted", self.key)
            return
        log.info("%s: %d PublicIPs allowed", self.key, len(self.ips))
        if self.own_public_ip is not None and self.own_public_ip not in self.ips:
            log.error(
                "our own PublicIP %s is not in %s: the operator's inventory is wrong "
                "(our lease is kept; peers running with this list will refuse it)",
                self.own_public_ip,
                self.key,
            )

    def judge(self, lease: Lease) -> bool:
        """:meth:`admits`, with one WARNING per refused lease and PublicIP however often
        it is judged (a refused lease stays visible in /metrics, not in a log flood)."""
        if self.admits(lease):
            return True
        if (lease.key, lease.public_ip) not in self._warned:
            self._warned.add((lease.key, lease.public_ip))
            log.warning(
                "ignoring lease %s: its PublicIP %s is not in %s",
                lease.subnet,
                lease.public_ip,
                self.key,
            )
        return False
