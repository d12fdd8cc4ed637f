"""Claiming a subnet in etcd: choose one (agent/subnet/choice.py), then one transaction that
writes it only if nobody did first, retried with another subnet when a race is lost.

Why each step costs one request: the lost transaction hands back the current leases in the same
request (etcd's Txn failure branch), so the next choice needs no separate list; the first
choice uses the leases the caller already read (the agent's start snapshot); a won create is not
read back, since etcd's answer carries its revision. At 255 agents racing for 255 subnets this
keeps every start at one grant and a few transactions. :mod:`agent.subnet.lease` holds the
claimed lease (renewal, loss, re-acquisition).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.etcd import EtcdClient, EtcdError, KeyRange, KeyValue
from agent.subnet.choice import NoFreeSubnet, choose_subnet
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import (
    Lease,
    LeaseDecodeError,
    decode_lease,
    encode_lease_value,
    subnet_key,
    subnets_dir,
)

log = logging.getLogger(__name__)


class LeaseError(Exception):
    """No subnet could be acquired (no free subnet, races lost too often, etcd down)."""


class NoSubnetLeft(LeaseError):
    """Every subnet of the network is leased or reserved: wait for one to be freed."""


def decode_leases(kvs: Iterable[KeyValue]) -> list[Lease]:
    """Every decodable lease and reservation among KVS (the others are logged)."""
    found: list[Lease] = []
    for kv in kvs:
        try:
            found.append(decode_lease(kv.key, kv.value, kv.lease_id, kv.mod_revision))
        except LeaseDecodeError as exc:
            log.warning("ignoring %s", exc)
    return found


def list_leases(client: EtcdClient, prefix: str) -> tuple[list[Lease], int]:
    """Every decodable lease and reservation under ``<prefix>/subnets/`` and the revision."""
    kvs, revision = client.get_prefix(subnets_dir(prefix))
    return decode_leases(kvs), revision


@dataclass(frozen=True)
class Claimed:
    """A won claim: the lease, the TTL etcd granted (0 for a reservation), and every lease the
    last choice saw with ours in it (for the conflict check)."""

    lease: Lease
    ttl: int
    seen: list[Lease]


@dataclass
class Claimer:
    """Claims a subnet for ``public_ip`` under ``prefix``; :meth:`claim` does the work."""

    client: EtcdClient
    prefix: str
    config: NetworkConfig
    public_ip: IPv4Address
    backend_type: str
    backend_data: Mapping[str, Any] | None
    ttl: int
    rng: random.Random
    stop: threading.Event
    max_attempts: int = 32

    def claim(self, preferred: IPv4Network | None, kvs: list[KeyValue] | None) -> Claimed:
        """Choose and claim a subnet (KVS: the leases already read, None to list them); a
        lost race is retried with another one, at most max_attempts times."""
        lost: set[IPv4Network] = set()
        granted, granted_ttl = 0, self.ttl
        try:
            for attempt in range(1, self.max_attempts + 1):
                if kvs is None:
                    kvs, _ = self.client.get_prefix(subnets_dir(self.prefix))
                leases = decode_leases(kvs)
                for other in leases:
                    if other.public_ip == self.public_ip and not self.config.contains_subnet(
                        other.subnet
                    ):
                        log.warning(
                            "ignoring lease %s of our PublicIP: outside the config", other.subnet
                        )
                choice = choose_subnet(
                    self.config,
                    [x for x in leases if not x.is_reservation],
                    [x for x in leases if x.is_reservation],
                    self.public_ip,
                    preferred,
                    self.rng,
                    exclude=lost,
                )
                reservation = choice.existing is not None and choice.existing.is_reservation
                if not reservation and not granted:
                    granted, granted_ttl = self.client.lease_grant(self.ttl)
                lease_id = 0 if reservation else granted
                lease, kvs = self._write(choice.subnet, choice.existing, lease_id)
                if lease is not None:
                    if lease_id:
                        granted = 0  # in use: do not revoke it below
                    log.info(
                        "acquired subnet %s for %s (%s, attempt %d)",
                        lease.subnet,
                        self.public_ip,
                        choice.reason,
                        attempt,
                    )
                    seen = [x for x in leases if x.key != lease.key] + [lease]
                    return Claimed(lease, granted_ttl if lease_id else 0, seen)
                log.info("lost the race for %s, trying another subnet", choice.subnet)
                lost.add(choice.subnet)
                self.stop.wait(self.rng.uniform(0.0, 0.02))
        except NoFreeSubnet as exc:
            raise NoSubnetLeft(str(exc)) from exc
        finally:
            if granted:
                with contextlib.suppress(EtcdError):
                    self.client.lease_revoke(granted)
        raise LeaseError(f"could not acquire a subnet in {self.max_attempts} attempts")

    def _write(
        self, subnet: IPv4Network, existing: Lease | None, lease_id: int
    ) -> tuple[Lease | None, list[KeyValue] | None]:
        """One transaction: create if absent, or take over our own key if unchanged. Returns
        the lease, or None and the leases as they are now (handed back by that transaction)."""
        key = subnet_key(self.prefix, subnet)
        value = encode_lease_value(self.public_ip, self.backend_type, self.backend_data)
        made, now, revision = self.client.put_else_get(
            key,
            value,
            lease_id,
            KeyRange(subnets_dir(self.prefix), prefix=True),
            existing.mod_revision if existing is not None else 0,
        )
        ours = [kv for kv in now if kv.key == key]
        if not made and ours and ours[0].lease_id == lease_id and ours[0].value == value:
            # A transaction retried on another endpoint after a timeout: the first try applied.
            made, revision = True, ours[0].mod_revision
        if not made:
            return None, now
        return decode_lease(key, value, lease_id, revision), None
