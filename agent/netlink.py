"""Small pyroute2 helpers shared by the data planes (no shelling out to `ip`).

Everything acts on the network namespace of the calling process: a :class:`Netlink` opens one
rtnetlink socket there (open one per batch of changes, they are cheap). Creation is idempotent
("replace" semantics) and deletion of something already gone is not an error, so a backend can
re-run its whole programming after a restart without special cases.

The bottom of the module holds the little peer bookkeeping every backend shares.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET
from typing import Any

from pyroute2.iproute import IPRoute  # not `from pyroute2`: see agent/light_imports.py
from pyroute2.netlink.exceptions import NetlinkError

from agent.backends.base import BackendError
from agent.config import NetworkConfig
from agent.subnets import Lease

log = logging.getLogger(__name__)

MAIN_TABLE = 254
PROTO_BOOT = 3  # what `ip route add` and flannel's netlink library use
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
SCOPE_LINK = 253
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}


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


class Netlink:
    """An rtnetlink socket in the current network namespace. Use as a context manager."""

    def __init__(self) -> None:
        self.ipr = IPRoute()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ipr.close()

    # -- links -----------------------------------------------------------------------------------

    def link_index(self, name: str) -> int | None:
        """The index of link NAME, or None."""
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def link(self, name: str) -> dict[str, Any] | None:
        """Facts about link NAME: index, mac, mtu, txqlen, kind, data (IFLA_INFO_DATA), up."""
        try:
            msg = self.ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code in _GONE:
                return None
            raise
        info = msg.get("IFLA_LINKINFO")
        data = info.get("IFLA_INFO_DATA") if info is not None else None
        return {
            "index": msg["index"],
            "mac": msg.get("IFLA_ADDRESS"),
            "mtu": msg.get("IFLA_MTU"),
            "txqlen": msg.get("IFLA_TXQLEN"),
            "kind": info.get("IFLA_INFO_KIND") if info is not None else None,
            "data": dict(data["attrs"]) if data is not None else {},
            "up": bool(msg["flags"] & 1),
        }

    def create_link(self, name: str, kind: str, **attrs: Any) -> int:
        """Create link NAME of KIND (pyroute2 attribute names) and return its index."""
        self.ipr.link("add", ifname=name, kind=kind, **attrs)
        index = self.link_index(name)
        if index is None:
            raise BackendError(f"link {name} vanished right after it was created")
        return index

    def delete_link(self, name: str) -> bool:
        """Delete link NAME; False if there was none."""
        index = self.link_index(name)
        if index is None:
            return False
        try:
            self.ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise
        return True

    def set_link(
        self, index: int, *, mtu: int | None = None, txqlen: int | None = None, up: bool = True
    ) -> None:
        """Set MTU and/or txqueuelen, and bring the link up (or down)."""
        attrs: dict[str, Any] = {"state": "up" if up else "down"}
        if mtu is not None:
            attrs["mtu"] = mtu
        if txqlen is not None:
            attrs["txqlen"] = txqlen
        self.ipr.link("set", index=index, **attrs)

    # -- addresses -------------------------------------------------------------------------------

    def addresses(self, index: int) -> list[IPv4Interface]:
        """The IPv4 addresses on link INDEX (with their prefix)."""
        return [
            IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in self.ipr.addr("dump", index=index, family=AF_INET)
        ]

    def ensure_only_address(self, index: int, address: IPv4Interface) -> None:
        """Make ADDRESS the only IPv4 address of link INDEX (an old lease's one goes)."""
        present = self.addresses(index)
        for other in present:
            if other != address:
                self._ignore_gone(
                    self.ipr.addr,
                    "del",
                    index=index,
                    address=str(other.ip),
                    prefixlen=other.network.prefixlen,
                )
        if address not in present:
            self.ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )

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
        attrs: dict[str, Any] = {
            "dst": str(dst),
            "oif": oif,
            "table": MAIN_TABLE,
            "proto": PROTO_BOOT,
        }
        if gateway is not None:
            attrs["gateway"] = str(gateway)
        if onlink:
            attrs["flags"] = RTNH_F_ONLINK
        if scope is not None:
            attrs["scope"] = scope
        self.ipr.route("replace", **attrs)

    def delete_route(
        self, dst: IPv4Network, oif: int | None = None, gateway: IPv4Address | None = None
    ) -> bool:
        """Delete the main-table route to DST (matching OIF and GATEWAY if given)."""
        attrs: dict[str, Any] = {"dst": str(dst), "table": MAIN_TABLE}
        if oif is not None:
            attrs["oif"] = oif
        if gateway is not None:
            attrs["gateway"] = str(gateway)
        return self._ignore_gone(self.ipr.route, "del", **attrs)

    def routes(self, oif: int | None = None) -> list[Route]:
        """IPv4 routes of the main table (only those through OIF if given)."""
        query: dict[str, Any] = {"family": AF_INET, "table": MAIN_TABLE}
        if oif is not None:
            query["oif"] = oif
        found = []
        for msg in self.ipr.route("dump", **query):
            if msg.get("RTA_TABLE", msg["table"]) != MAIN_TABLE:
                continue
            dst = msg.get("RTA_DST") or "0.0.0.0"  # noqa: S104 - the default route
            gateway = msg.get("RTA_GATEWAY")
            found.append(
                Route(
                    dst=IPv4Network(f"{dst}/{msg['dst_len']}"),
                    gateway=IPv4Address(gateway) if gateway else None,
                    oif=msg.get("RTA_OIF"),
                    onlink=bool(msg["flags"] & RTNH_F_ONLINK),
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

    def replace_neighbour(self, index: int, ip: IPv4Address, mac: str) -> None:
        """A permanent ARP entry IP -> MAC on link INDEX (``ip neigh replace ... permanent``)."""
        self.ipr.neigh("replace", ifindex=index, dst=str(ip), lladdr=mac, state=NUD_PERMANENT)

    def delete_neighbour(self, index: int, ip: IPv4Address) -> bool:
        return self._ignore_gone(self.ipr.neigh, "del", ifindex=index, dst=str(ip))

    def neighbours(self, index: int) -> list[Neighbour]:
        """Permanent IPv4 neighbours of link INDEX."""
        return [
            Neighbour(IPv4Address(msg.get("NDA_DST")), str(msg.get("NDA_LLADDR")))
            for msg in self.ipr.neigh("dump", ifindex=index, family=AF_INET)
            if msg["state"] & NUD_PERMANENT and msg.get("NDA_DST") and msg.get("NDA_LLADDR")
        ]

    def replace_fdb(self, index: int, mac: str, dst: IPv4Address) -> None:
        """A permanent fdb entry MAC -> remote DST on vxlan link INDEX (``bridge fdb replace``)."""
        self.ipr.fdb(
            "replace", ifindex=index, lladdr=mac, dst=str(dst), state=NUD_PERMANENT, flags=NTF_SELF
        )

    def delete_fdb(self, index: int, mac: str, dst: IPv4Address) -> bool:
        return self._ignore_gone(self.ipr.fdb, "del", ifindex=index, lladdr=mac, dst=str(dst))

    def fdb_entries(self, index: int) -> list[Neighbour]:
        """The fdb entries with a remote IPv4 destination on vxlan link INDEX."""
        found = []
        for msg in self.ipr.fdb("dump", ifindex=index):
            dst = msg.get("NDA_DST")
            if msg["ifindex"] == index and dst and "." in str(dst):
                found.append(Neighbour(IPv4Address(dst), str(msg.get("NDA_LLADDR"))))
        return found

    @staticmethod
    def _ignore_gone(method: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            method(*args, **kwargs)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise
        return True


# -- peer bookkeeping shared by the backends -----------------------------------------------------


def subnet_zero(subnet: IPv4Network) -> IPv4Address:
    """A subnet's .0 address (flannel puts it on the overlay device, /32 or /Network)."""
    return subnet.network_address


def skip_reason(
    lease: Lease, type_name: str, config: NetworkConfig, own: Lease | None
) -> str | None:
    """Why a TYPE_NAME backend refuses LEASE; '' if it can program it, None for our own lease."""
    if own is not None and lease.subnet == own.subnet:
        return None
    if own is not None and lease.public_ip == own.public_ip:
        return f"its PublicIP {lease.public_ip} is ours too (duplicate PublicIP, flannel #98)"
    if lease.backend_type != type_name:
        return f"its backend type is {lease.backend_type!r}, not {type_name!r}"
    if not lease.subnet.subnet_of(config.network):
        return f"it is outside the Network {config.network}"
    return ""


def stale_routes(
    routes: list[Route], network: IPv4Network, keep: set[IPv4Network]
) -> Iterator[Route]:
    """Routes inside NETWORK (narrower than it) that no current lease explains."""
    for route in routes:
        if (
            route.dst.prefixlen > network.prefixlen
            and route.dst.subnet_of(network)
            and route.dst not in keep
        ):
            yield route


class PeerTable:
    """Mixin for a Backend: the remote-lease bookkeeping all data planes share.

    A backend provides ``_install`` / ``_uninstall`` (program or remove one lease), optionally
    ``_verdict`` (extra refusal reasons) and ``_sweep`` (drop state a previous run left), and
    gets add/replace/remove/sync_peers with flannel's semantics: leases of another backend
    type or outside the Network are skipped with one warning line, a refused lease raises
    :class:`BackendError` from ``add_peer`` but never stops ``sync_peers`` from routing the rest.
    """

    type_name: str
    config: NetworkConfig
    own: Lease | None
    peers: dict[IPv4Network, Lease]
    refused: int

    def _verdict(self, nl: Netlink, lease: Lease) -> str | None:
        """'' to program LEASE, None to ignore it silently (our own), else why it is refused."""
        return skip_reason(lease, self.type_name, self.config, self.own)

    def _install(self, nl: Netlink, lease: Lease, old: Lease | None) -> None:
        raise NotImplementedError

    def _uninstall(self, nl: Netlink, lease: Lease) -> None:
        raise NotImplementedError

    def _sweep(self, nl: Netlink, keep: dict[IPv4Network, Lease]) -> None:
        """Remove what a previous run programmed for subnets not in KEEP (default: nothing)."""

    def _require_setup(self) -> None:
        if self.own is None:
            raise BackendError(f"{self.type_name}: setup() must run before peers are added")

    def _add(self, nl: Netlink, lease: Lease) -> None:
        reason = self._verdict(nl, lease)
        if reason is None:
            return
        if reason:
            self.refused += 1
            log.warning(
                "%s: not routing %s (PublicIP %s): %s",
                self.type_name,
                lease.subnet,
                lease.public_ip,
                reason,
            )
            raise BackendError(f"{self.type_name}: not routing {lease.subnet}: {reason}")
        try:
            self._install(nl, lease, self.peers.get(lease.subnet))
        except NetlinkError as exc:  # e.g. the kernel rejects the next hop: skip this one
            self.refused += 1
            log.warning("%s: cannot program %s: %s", self.type_name, lease.subnet, exc)
            raise BackendError(f"{self.type_name}: cannot program {lease.subnet}: {exc}") from exc
        self.peers[lease.subnet] = lease

    def add_peer(self, lease: Lease) -> None:
        """Program one remote lease (BackendError if this backend refuses it)."""
        self._require_setup()
        with Netlink() as nl:
            self._add(nl, lease)

    def replace_peer(self, old: Lease, new: Lease) -> None:
        """New entries first, then the old ones that differ: no gap for an unchanged subnet."""
        self._require_setup()
        if old.subnet != new.subnet:
            self.remove_peer(old)
        try:
            self.add_peer(new)
        except BackendError:
            self.remove_peer(old)  # the old entries are no longer valid either
            raise

    def remove_peer(self, lease: Lease) -> None:
        """Remove exactly what was programmed for LEASE's subnet."""
        self._require_setup()
        known = self.peers.pop(lease.subnet, None)
        with Netlink() as nl:
            self._uninstall(nl, known or lease)

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        """The full set of remote leases: drop stale state, then program every usable one."""
        self._require_setup()
        with Netlink() as nl:
            keep = {x.subnet: x for x in leases if self._verdict(nl, x) == ""}
            self._sweep(nl, keep)
            self.peers = {s: x for s, x in self.peers.items() if s in keep}
            for lease in leases:
                try:
                    self._add(nl, lease)
                except BackendError:
                    continue  # logged once by _add; the others still get routed

    def stats(self) -> dict[str, float]:
        return {
            "peers": len(self.peers),
            "routes_programmed": len(self.peers),
            "peers_refused": self.refused,
        }
