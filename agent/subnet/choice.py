"""Which subnet to lease, and what is wrong among the leases: pure, no I/O.

flannel's order (own reservation, own lease, the previous subnet, then a random one among the
first free ones), with reservations honoured and the subnet our address points at tried before
the random one; conflicts an operator must fix (flannel #805, #98).
:mod:`agent.subnet.lease` calls these with what it read from etcd.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease

RANDOM_POOL = 100  # flannel picks at random among the first 100 free subnets


class NoFreeSubnet(Exception):
    """Every subnet between SubnetMin and SubnetMax is taken."""


@dataclass(frozen=True)
class SubnetChoice:
    """The outcome of :func:`choose_subnet`."""

    subnet: IPv4Network
    reason: str  # "own-reservation", "own-lease", "previous" or "random"
    existing: Lease | None = None


@dataclass(frozen=True)
class Conflict:
    """Something wrong among the leases that an operator must fix (flannel #805, #98)."""

    kind: str  # "duplicate-public-ip" or "overlapping-subnets"
    detail: str
    subnets: tuple[IPv4Network, ...] = field(default=())


def iter_subnets(config: NetworkConfig) -> Iterator[IPv4Network]:
    """Every SubnetLen subnet from SubnetMin to SubnetMax, in order."""
    size = config.subnet_size
    for base in range(int(config.subnet_min), int(config.subnet_max) + 1, size):
        yield IPv4Network((base, config.subnet_len))


class _Taken:
    """Fast 'is this subnet used' over leases of any length."""

    def __init__(self, subnet_len: int, used: Iterable[IPv4Network]) -> None:
        self.exact: set[IPv4Network] = set()
        self.other: list[IPv4Network] = []
        for net in used:
            if net.prefixlen == subnet_len:
                self.exact.add(net)
            else:
                self.other.append(net)

    def __contains__(self, subnet: IPv4Network) -> bool:
        return subnet in self.exact or any(subnet.overlaps(o) for o in self.other)


def choose_subnet(  # noqa: PLR0917 - the documented signature
    config: NetworkConfig,
    leases: Iterable[Lease],
    reservations: Iterable[Lease],
    public_ip: IPv4Address,
    previous_subnet: IPv4Network | None,
    rng: random.Random | None = None,
    *,
    exclude: Iterable[IPv4Network] = (),
) -> SubnetChoice:
    """Pick our subnet in flannel's order (with reservations honoured, unlike flannel on v3).

    1. a reservation, then a lease, whose PublicIP is ours and that fits the config;
    2. ``previous_subnet`` (from the last subnet.env) if it fits the config and is free;
    3. the subnet our PublicIP points at (its value modulo the number of subnets), if free;
    4. a random one among the first 100 free subnets from SubnetMin.
    Step 3 is ours, not flannel's: hosts with neighbouring addresses (the usual case) that start
    at once then ask for different subnets, where random picks collide like birthdays (at 254
    agents started together, 1.4 lost races per agent; each costs a transaction), and a host
    that lost both its lease and subnet.env tends to get its old subnet back.
    ``exclude`` lists subnets just lost in a race. Raises :class:`NoFreeSubnet`.
    """
    leases = list(leases)
    reservations = list(reservations)
    excluded = set(exclude)
    for kind, group in (("own-reservation", reservations), ("own-lease", leases)):
        for lease in group:
            if (
                lease.public_ip == public_ip
                and config.contains_subnet(lease.subnet)
                and lease.subnet not in excluded
            ):
                return SubnetChoice(lease.subnet, kind, lease)
    taken = _Taken(config.subnet_len, [x.subnet for x in leases + reservations] + list(excluded))
    if (
        previous_subnet is not None
        and config.contains_subnet(previous_subnet)
        and previous_subnet not in taken
    ):
        return SubnetChoice(previous_subnet, "previous")
    count = (int(config.subnet_max) - int(config.subnet_min)) // config.subnet_size + 1
    offset = (int(public_ip) % count) * config.subnet_size
    by_address = IPv4Network((int(config.subnet_min) + offset, config.subnet_len))
    if by_address not in taken and by_address not in excluded:
        return SubnetChoice(by_address, "address")
    pool: list[IPv4Network] = []
    for subnet in iter_subnets(config):
        if subnet not in taken:
            pool.append(subnet)
            if len(pool) >= RANDOM_POOL:
                break
    if not pool:
        net, size = config.network, config.subnet_size
        whole = (int(net.network_address) + size, int(net.broadcast_address) + 1 - size)
        bounds = f" between {config.subnet_min} and {config.subnet_max}"
        if (int(config.subnet_min), int(config.subnet_max)) == whole:
            bounds = ""  # flannel's defaults: the whole network
        raise NoFreeSubnet(
            f"no free subnet in {config.network}{bounds} ({len(leases) + len(reservations)} leased)"
        )
    picker = rng or random.Random()  # noqa: S311 - spreading subnets, not cryptography
    return SubnetChoice(picker.choice(pool), "random")


def find_conflicts(leases: Iterable[Lease]) -> list[Conflict]:
    """Duplicate PublicIPs and overlapping subnets among all leases and reservations."""
    leases = sorted(leases, key=lambda x: (int(x.subnet.network_address), x.subnet.prefixlen))
    found: list[Conflict] = []
    by_ip: dict[IPv4Address, list[Lease]] = {}
    for lease in leases:
        by_ip.setdefault(lease.public_ip, []).append(lease)
    for ip, group in sorted(by_ip.items()):
        if len(group) > 1:
            nets = tuple(x.subnet for x in group)
            found.append(
                Conflict(
                    "duplicate-public-ip",
                    f"PublicIP {ip} holds {len(group)} subnets: " + ", ".join(str(n) for n in nets),
                    nets,
                )
            )
    # Sorted by start address: a subnet can only overlap the ones that start before it ends.
    for i, lease in enumerate(leases):
        for other in leases[i + 1 :]:
            if other.subnet.network_address > lease.subnet.broadcast_address:
                break
            found.append(
                Conflict(
                    "overlapping-subnets",
                    f"subnets {lease.subnet} ({lease.public_ip}) and {other.subnet} "
                    f"({other.public_ip}) overlap",
                    (lease.subnet, other.subnet),
                )
            )
    return found
