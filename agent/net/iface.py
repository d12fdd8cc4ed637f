"""Choose the external interface the overlay runs over, the way flanneld does.

Order (flanneld's): each ``--iface`` (an interface name or one of its IPv4 addresses) in the
order given; else each ``--iface-regex`` (searched in addresses first, then in names); else the
interface of the default route; else (where flanneld gives up) the first non-loopback interface
with an IPv4 address. ``--public-ip`` overrides what peers send to. The MTU comes from the link.
:func:`select_interface` is the pure part; :func:`choose_interface` reads the kernel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

IFF_LOOPBACK = 0x8


class InterfaceError(ValueError):
    """No interface matches what was asked (one line, says what was tried)."""


@dataclass(frozen=True)
class ExternalInterface:
    """The underlay interface the overlay runs over (flannel's --iface / --public-ip)."""

    name: str
    index: int
    address: IPv4Address  # the interface's own address
    public_ip: IPv4Address  # what peers send to (usually == address)
    mtu: int


@dataclass(frozen=True)
class LinkInfo:
    """What the choice needs to know about one link."""

    name: str
    index: int
    mtu: int
    addresses: tuple[IPv4Interface, ...] = field(default=())
    loopback: bool = False
    up: bool = True


def _as_ip(text: str) -> IPv4Address | None:
    try:
        return IPv4Address(text)
    except ValueError:
        return None


def _result(link: LinkInfo, address: IPv4Address, public_ip: str | None) -> ExternalInterface:
    public = address
    if public_ip:
        parsed = _as_ip(public_ip)
        if parsed is None:
            raise InterfaceError(f"--public-ip {public_ip!r} is not an IPv4 address")
        public = parsed
    return ExternalInterface(link.name, link.index, address, public, link.mtu)


def _first_address(link: LinkInfo) -> IPv4Address | None:
    return link.addresses[0].ip if link.addresses else None


def _by_iface(links: Sequence[LinkInfo], wanted: str) -> tuple[LinkInfo, IPv4Address] | None:
    ip = _as_ip(wanted)
    for link in links:
        if ip is not None and any(a.ip == ip for a in link.addresses):
            return link, ip
        if ip is None and link.name == wanted:
            address = _first_address(link)
            if address is None:
                raise InterfaceError(f"--iface {wanted}: the interface has no IPv4 address")
            return link, address
    return None


def _by_regex(links: Sequence[LinkInfo], pattern: str) -> tuple[LinkInfo, IPv4Address] | None:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a valid expression: {exc}") from exc
    for link in links:  # addresses first, like flanneld
        for addr in link.addresses:
            if regex.search(str(addr.ip)):
                return link, addr.ip
    for link in links:
        address = _first_address(link)
        if address is not None and not link.loopback and regex.search(link.name):
            return link, address
    return None


def select_interface(
    links: Sequence[LinkInfo],
    default_route_index: int | None,
    ifaces: Sequence[str] = (),
    regexes: Sequence[str] = (),
    public_ip: str | None = None,
) -> ExternalInterface:
    """The ExternalInterface for these links and flags; :class:`InterfaceError` if none fits."""
    for wanted in ifaces:
        found = _by_iface(links, wanted)
        if found is not None:
            return _result(found[0], found[1], public_ip)
    for pattern in regexes:
        found = _by_regex(links, pattern)
        if found is not None:
            return _result(found[0], found[1], public_ip)
    if ifaces or regexes:
        asked = [f"--iface {x}" for x in ifaces] + [f"--iface-regex {x}" for x in regexes]
        seen = ", ".join(
            f"{x.name} ({', '.join(str(a.ip) for a in x.addresses) or 'no IPv4'})" for x in links
        )
        raise InterfaceError(f"no interface matches {' or '.join(asked)}; interfaces: {seen}")
    for link in links:
        address = _first_address(link)
        if link.index == default_route_index and address is not None:
            return _result(link, address, public_ip)
    for link in links:
        address = _first_address(link)
        if not link.loopback and link.up and address is not None:
            return _result(link, address, public_ip)
    raise InterfaceError(
        "no usable interface: no default route and no non-loopback interface with an IPv4 "
        "address (use --iface)"
    )


def read_links() -> tuple[list[LinkInfo], int | None]:
    """Every link of the current network namespace and the default route's link index."""
    from agent.net.netlink import Netlink  # noqa: PLC0415 - keeps the pure part import-light

    links = []
    with Netlink() as nl:
        for link in nl.links():
            index = link["index"]
            links.append(
                LinkInfo(
                    name=link["name"],
                    index=index,
                    mtu=link["mtu"],
                    addresses=tuple(nl.addresses(index)),
                    loopback=bool(link["flags"] & IFF_LOOPBACK),
                    up=link["up"],
                )
            )
        default = nl.default_route_oif()
    links.sort(key=lambda x: x.index)
    return links, default


def choose_interface(
    ifaces: Sequence[str] = (), regexes: Sequence[str] = (), public_ip: str | None = None
) -> ExternalInterface:
    """flanneld's --iface / --iface-regex / --public-ip choice in the current namespace."""
    links, default = read_links()
    return select_interface(links, default, ifaces, regexes, public_ip)
