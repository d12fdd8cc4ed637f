"""The kernel objects the data planes program, over rtnetlink (no shelling out to `ip`).

Everything acts on the network namespace of the calling process: a :class:`Netlink` opens one
rtnetlink socket there (open one per batch of changes, they are cheap). Creation is idempotent
("replace" semantics) and deletion of something already gone is not an error, so a backend can
re-run its whole programming after a restart without special cases. The messages themselves are
built and parsed by agent/net/rtnl.py. Part of the agent/net library: it imports nothing
of the agent, so its errors are its own (:class:`NetlinkError`, an OSError).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET, AF_UNSPEC
from typing import Any

from agent.net import rtnl
from agent.net.rtnl import NetlinkError, as_ipv4, as_mac, as_text, as_u32, attributes

__all__ = ["Neighbour", "Netlink", "NetlinkError", "Route"]

log = logging.getLogger(__name__)

MAIN_TABLE = 254
PROTO_BOOT = 3  # what `ip route add` and flannel's netlink library use
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RTN_UNICAST = 1
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
SCOPE_NOWHERE = 255
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}

# rtattr types (linux/if_link.h, if_addr.h, rtnetlink.h, neighbour.h)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_TXQLEN, IFLA_LINKINFO = 1, 3, 4, 13, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NDA_DST, NDA_LLADDR = 1, 2
# IFLA_VXLAN_* we set and read back: name -> (type, encoder, decoder)
_VXLAN: dict[str, tuple[int, Callable[[int, Any], bytes], Callable[[bytes], Any]]] = {
    "IFLA_VXLAN_ID": (1, rtnl.u32, as_u32),
    "IFLA_VXLAN_LINK": (3, rtnl.u32, as_u32),
    "IFLA_VXLAN_LOCAL": (4, rtnl.ipv4, lambda raw: str(as_ipv4(raw))),
    "IFLA_VXLAN_LEARNING": (7, rtnl.u8, rtnl.as_u8),
    "IFLA_VXLAN_PORT": (15, rtnl.be16, rtnl.as_be16),
}


@dataclass(frozen=True)
class Route:
    """One IPv4 route of the main table, as read back from the kernel."""

    dst: IPv4Network
    gateway: IPv4Address | None
    oif: int | None
    onlink: bool


@dataclass(frozen=True)
class Neighbour:
    """A permanent IPv4 neighbour (ARP) entry or, with ``fdb``, a bridge fdb entry."""

    ip: IPv4Address
    mac: str


def _link_facts(payload: bytes) -> dict[str, Any]:
    _, _, index, flags, _ = rtnl.header(rtnl.IFINFOMSG, payload, "link")
    attrs = attributes(payload, rtnl.IFINFOMSG.size)
    info = attributes(attrs[IFLA_LINKINFO]) if IFLA_LINKINFO in attrs else {}
    kind = as_text(info.get(IFLA_INFO_KIND))
    data: dict[str, Any] = {}
    if kind == "vxlan" and IFLA_INFO_DATA in info:
        raw_data = attributes(info[IFLA_INFO_DATA])
        data = {n: dec(raw_data[t]) for n, (t, _, dec) in _VXLAN.items() if t in raw_data}
    return {
        "name": as_text(attrs.get(IFLA_IFNAME)),
        "index": index,
        "flags": flags,
        "mac": as_mac(attrs.get(IFLA_ADDRESS)),
        "mtu": as_u32(attrs.get(IFLA_MTU)),
        "txqlen": as_u32(attrs.get(IFLA_TXQLEN)),
        "kind": kind,
        "data": data,
        "up": bool(flags & rtnl.IFF_UP),
    }


class Netlink:
    """An rtnetlink socket in the current network namespace. Use as a context manager."""

    def __init__(self) -> None:
        self.rt = rtnl.RtnlSocket()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rt.close()

    # -- links -----------------------------------------------------------------------------------

    def links(self) -> list[dict[str, Any]]:
        """Facts about every link (see :meth:`link`), plus ``name`` and ``flags``."""
        body = rtnl.IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
        return [_link_facts(p) for k, p in self.rt.dump(rtnl.RTM_GETLINK, body, "links")
                if k == rtnl.RTM_NEWLINK]  # fmt: skip

    def link_index(self, name: str) -> int | None:
        """The index of link NAME, or None."""
        found = self.link(name)
        return int(found["index"]) if found else None

    def link(self, name: str) -> dict[str, Any] | None:
        """Facts about link NAME: index, mac, mtu, txqlen, kind, data (IFLA_INFO_DATA), up."""
        body = rtnl.IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + rtnl.text(IFLA_IFNAME, name)
        try:
            replies = self.rt.get(rtnl.RTM_GETLINK, body, f"link {name}")
        except NetlinkError as exc:
            if exc.code in _GONE:
                return None
            raise
        return _link_facts(replies[0][1]) if replies else None

    def create_link(
        self, name: str, kind: str, *, mtu: int | None = None, address: str | None = None,
        **data: Any,
    ) -> int:  # fmt: skip
        """Create link NAME of KIND and return its index.

        ADDRESS sets the MAC at creation: the kernel then marks it as set, not random, and
        systemd-udevd's MACAddressPolicy=persistent (Debian 12's default .link) leaves it alone.
        For ``vxlan``, DATA takes vxlan_id, vxlan_port, vxlan_local, vxlan_link and
        vxlan_learning (the IFLA_VXLAN_* attributes).
        """
        info_data = b""
        for key, value in data.items():
            spec = _VXLAN.get(f"IFLA_{key.upper()}") if kind == "vxlan" else None
            if spec is None:
                raise ValueError(f"link attribute {key} is not supported for kind {kind}")
            info_data += spec[1](spec[0], value)
        linkinfo = rtnl.attr(IFLA_INFO_KIND, kind.encode())
        if info_data:
            linkinfo += rtnl.attr(IFLA_INFO_DATA, info_data)
        body = rtnl.IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + rtnl.text(IFLA_IFNAME, name)
        if mtu is not None:
            body += rtnl.u32(IFLA_MTU, mtu)
        if address is not None:
            body += rtnl.mac(IFLA_ADDRESS, address)
        body += rtnl.attr(IFLA_LINKINFO, linkinfo)
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
        self.rt.request(rtnl.RTM_NEWLINK, body, flags, f"create {kind} link {name}")
        index = self.link_index(name)
        if index is None:
            raise NetlinkError(errno.ENODEV, f"link {name} vanished right after it was created")
        return index

    def delete_link(self, name: str) -> bool:
        """Delete link NAME; False if there was none."""
        index = self.link_index(name)
        if index is None:
            return False
        body = rtnl.IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0)
        return self._ignore_gone(rtnl.RTM_DELLINK, body, 0, f"delete link {name}")

    def set_link(
        self, index: int, *, mtu: int | None = None, txqlen: int | None = None, up: bool = True
    ) -> None:
        """Set MTU and/or txqueuelen, and bring the link up (or down)."""
        flags = rtnl.IFF_UP if up else 0
        body = rtnl.IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, rtnl.IFF_UP)
        if mtu is not None:
            body += rtnl.u32(IFLA_MTU, mtu)
        if txqlen is not None:
            body += rtnl.u32(IFLA_TXQLEN, txqlen)
        self.rt.request(rtnl.RTM_NEWLINK, body, 0, f"set link {index}")

    # -- addresses -------------------------------------------------------------------------------

    def addresses(self, index: int) -> list[IPv4Interface]:
        """The IPv4 addresses on link INDEX (with their prefix)."""
        found = []
        body = rtnl.IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)
        for kind, payload in self.rt.dump(rtnl.RTM_GETADDR, body, "addresses"):
            family, prefixlen, _, _, ifindex = rtnl.header(rtnl.IFADDRMSG, payload, "address")
            if kind != rtnl.RTM_NEWADDR or family != AF_INET or ifindex != index:
                continue
            attrs = attributes(payload, rtnl.IFADDRMSG.size)
            address = as_ipv4(attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL))
            if address is not None:
                found.append(IPv4Interface(rtnl.prefix(address, prefixlen)))
        return found

    @staticmethod
    def _address(index: int, address: IPv4Interface) -> bytes:
        return (
            rtnl.IFADDRMSG.pack(AF_INET, address.network.prefixlen, 0, SCOPE_UNIVERSE, index)
            + rtnl.ipv4(IFA_LOCAL, address.ip)
            + rtnl.ipv4(IFA_ADDRESS, address.ip)
        )

    def ensure_only_address(self, index: int, address: IPv4Interface) -> None:
        """Make ADDRESS the only IPv4 address of link INDEX (an old lease's one goes).

        The new address is added before the old one goes: a link left without any IPv4
        address for a moment has every route and neighbour through it flushed by the kernel,
        and the backend, believing its peers programmed, would not put them back.
        """
        present = self.addresses(index)
        if address not in present:
            body = self._address(index, address)
            flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
            self.rt.request(rtnl.RTM_NEWADDR, body, flags, f"add address {address}")
        for other in present:
            if other != address:
                body = self._address(index, other)
                self._ignore_gone(rtnl.RTM_DELADDR, body, 0, f"delete address {other}")

    # -- routes ----------------------------------------------------------------------------------

    def replace_route(
        self,
        dst: IPv4Network,
        oif: int,
        gateway: IPv4Address | None = None,
        *,
        onlink: bool = False,
        scope: int | None = None,
    ) -> None:
        """Add or replace the main-table route to DST (``ip route replace``)."""
        header = rtnl.RTMSG.pack(
            AF_INET, dst.prefixlen, 0, 0, MAIN_TABLE, PROTO_BOOT,
            SCOPE_UNIVERSE if scope is None else scope, RTN_UNICAST,
            RTNH_F_ONLINK if onlink else 0,
        )  # fmt: skip
        body = header + rtnl.ipv4(RTA_DST, dst.network_address) + rtnl.u32(RTA_OIF, oif)
        if gateway is not None:
            body += rtnl.ipv4(RTA_GATEWAY, gateway)
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
        self.rt.request(rtnl.RTM_NEWROUTE, body, flags, f"route {dst}")

    def delete_route(
        self, dst: IPv4Network, oif: int | None = None, gateway: IPv4Address | None = None
    ) -> bool:
        """Delete the main-table route to DST (matching OIF and GATEWAY if given)."""
        header = rtnl.RTMSG.pack(AF_INET, dst.prefixlen, 0, 0, MAIN_TABLE, 0, SCOPE_NOWHERE, 0, 0)
        body = header + rtnl.ipv4(RTA_DST, dst.network_address)
        if oif is not None:
            body += rtnl.u32(RTA_OIF, oif)
        if gateway is not None:
            body += rtnl.ipv4(RTA_GATEWAY, gateway)
        return self._ignore_gone(rtnl.RTM_DELROUTE, body, 0, f"delete route {dst}")

    def routes(self, oif: int | None = None) -> list[Route]:
        """IPv4 routes of the main table (only those through OIF if given)."""
        found = []
        body = rtnl.RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for kind, payload in self.rt.dump(rtnl.RTM_GETROUTE, body, "routes"):
            family, dst_len, _, _, table, _, _, _, flags = rtnl.header(rtnl.RTMSG, payload, "route")
            attrs = attributes(payload, rtnl.RTMSG.size)
            table = as_u32(attrs.get(RTA_TABLE)) or table
            route_oif = as_u32(attrs.get(RTA_OIF))
            if kind != rtnl.RTM_NEWROUTE or family != AF_INET or table != MAIN_TABLE:
                continue
            if oif is not None and route_oif != oif:
                continue
            dst = as_ipv4(attrs.get(RTA_DST)) or IPv4Address(0)
            found.append(
                Route(
                    dst=IPv4Network(rtnl.prefix(dst, dst_len), strict=False),
                    gateway=as_ipv4(attrs.get(RTA_GATEWAY)),
                    oif=route_oif,
                    onlink=bool(flags & RTNH_F_ONLINK),
                )
            )
        return found

    def default_route_oif(self) -> int | None:
        """The link of the IPv4 default route of the main table, if any."""
        for route in self.routes():
            if route.dst.prefixlen == 0 and route.oif is not None:
                return route.oif
        return None

    # -- neighbours and fdb ----------------------------------------------------------------------

    @staticmethod
    def _neigh(family: int, index: int, ip: IPv4Address, mac: str | None, flags: int) -> bytes:
        body = rtnl.NDMSG.pack(family, index, NUD_PERMANENT, flags, 0)
        if mac is not None:
            body += rtnl.mac(NDA_LLADDR, mac)
        return body + rtnl.ipv4(NDA_DST, ip)

    def _neighbours(self, family: int, index: int) -> Iterator[Neighbour]:
        body = rtnl.NDMSG.pack(family, 0, 0, 0, 0)
        for kind, payload in self.rt.dump(rtnl.RTM_GETNEIGH, body, "neighbours"):
            msg_family, ifindex, state, _, _ = rtnl.header(rtnl.NDMSG, payload, "neighbour")
            if kind != rtnl.RTM_NEWNEIGH or msg_family != family or ifindex != index:
                continue
            attrs = attributes(payload, rtnl.NDMSG.size)
            ip, lladdr = as_ipv4(attrs.get(NDA_DST)), as_mac(attrs.get(NDA_LLADDR))
            if ip is not None and lladdr and (family == rtnl.AF_BRIDGE or state & NUD_PERMANENT):
                yield Neighbour(ip, lladdr)

    def replace_neighbour(self, index: int, ip: IPv4Address, mac: str) -> None:
        """A permanent ARP entry IP -> MAC on link INDEX (``ip neigh replace ... permanent``)."""
        body = self._neigh(AF_INET, index, ip, mac, 0)
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
        self.rt.request(rtnl.RTM_NEWNEIGH, body, flags, f"neighbour {ip}")

    def delete_neighbour(self, index: int, ip: IPv4Address) -> bool:
        body = self._neigh(AF_INET, index, ip, None, 0)
        return self._ignore_gone(rtnl.RTM_DELNEIGH, body, 0, f"delete neighbour {ip}")

    def neighbours(self, index: int) -> list[Neighbour]:
        """Permanent IPv4 neighbours of link INDEX."""
        return list(self._neighbours(AF_INET, index))

    def replace_fdb(self, index: int, mac: str, dst: IPv4Address) -> None:
        """A permanent fdb entry MAC -> remote DST on vxlan link INDEX (``bridge fdb replace``)."""
        body = self._neigh(rtnl.AF_BRIDGE, index, dst, mac, NTF_SELF)
        flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
        self.rt.request(rtnl.RTM_NEWNEIGH, body, flags, f"fdb {mac} -> {dst}")

    def delete_fdb(self, index: int, mac: str, dst: IPv4Address) -> bool:
        body = self._neigh(rtnl.AF_BRIDGE, index, dst, mac, NTF_SELF)
        return self._ignore_gone(rtnl.RTM_DELNEIGH, body, 0, f"delete fdb {mac}")

    def fdb_entries(self, index: int) -> list[Neighbour]:
        """The fdb entries with a remote IPv4 destination on vxlan link INDEX."""
        return list(self._neighbours(rtnl.AF_BRIDGE, index))

    def _ignore_gone(self, msg_type: int, body: bytes, flags: int, what: str) -> bool:
        try:
            self.rt.request(msg_type, body, flags, what)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise
        return True
