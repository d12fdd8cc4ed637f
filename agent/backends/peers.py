"""The remote-lease bookkeeping every backend shares (flannel: pkg/backend/route_network.go).

:class:`PeerTable` gives a backend add/replace/remove/sync_peers with flannel's semantics from
two hooks (program one lease, remove one lease); :func:`skip_reason` says which leases a backend
refuses and why; :func:`stale_routes` finds what a previous run left in the routing table.
It sits above agent/net (the kernel library) and below the backends that mix it in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network

from agent.backends.base import BackendError
from agent.net.netlink import Netlink, Route
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease

log = logging.getLogger(__name__)


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


def gateway_routes(
    nl: Netlink, index: int, network: IPv4Network, keep: set[IPv4Network]
) -> list[Route]:
    """Routes through a gateway on the device INDEX, inside NETWORK, that KEEP does not
    explain: what host-gw installs on the external interface (its own stale ones, or all of
    them once another backend runs)."""
    via = [r for r in nl.routes(index) if r.gateway is not None]
    return list(stale_routes(via, network, keep))


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
        except OSError as exc:  # e.g. the kernel rejects the next hop (NetlinkError): skip it
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
