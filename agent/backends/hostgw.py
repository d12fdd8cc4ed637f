"""The host-gw backend: plain kernel routes ``<remote subnet> via <PublicIP> dev <iface>``.

No device and no encapsulation, so the container MTU is the interface's. It only works when
every peer sits on the same L2 segment: a lease whose PublicIP is outside every IPv4 network
connected to the external interface is refused with one clear error (that peer is skipped,
the others are routed), where flannel would install a route the kernel rejects or that
black-holes traffic through the default gateway.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Network

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.backends.peers import PeerTable, gateway_routes
from agent.net.netlink import Netlink
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease

log = logging.getLogger(__name__)


class HostGwBackend(PeerTable, Backend):
    """flannel's host-gw data plane: one route per remote lease via its PublicIP."""

    type_name = "host-gw"

    def __init__(self, config: NetworkConfig, iface: ExternalInterface) -> None:
        super().__init__(config, iface)
        self.own: Lease | None = None
        self.peers: dict[IPv4Network, Lease] = {}
        self.refused = 0
        self._segments: list[IPv4Network] = []

    @property
    def mtu(self) -> int:
        return self.iface.mtu

    def setup(self, own: Lease) -> None:
        self.own = own
        with Netlink() as nl:
            self._segments = [a.network for a in nl.addresses(self.iface.index)]
        if not self._segments:
            raise BackendError(f"host-gw: {self.iface.name} has no IPv4 network")

    def teardown(self) -> None:
        with Netlink() as nl:
            for lease in self.peers.values():
                nl.delete_route(lease.subnet, self.iface.index, lease.public_ip)
        self.peers.clear()

    # -- peers (PeerTable hooks) ---------------------------------------------------------------

    def _verdict(self, nl: Netlink, lease: Lease) -> str | None:
        reason = super()._verdict(nl, lease)
        if reason != "" or any(lease.public_ip in net for net in self._segments):
            return reason
        # The interface's addresses may have changed since setup: look once more.
        self._segments = [a.network for a in nl.addresses(self.iface.index)]
        if any(lease.public_ip in net for net in self._segments):
            return ""
        nets = ", ".join(str(n) for n in self._segments) or "none"
        return (
            f"PublicIP {lease.public_ip} is not on the same L2 segment as {self.iface.name} "
            f"({nets}); host-gw needs every host on one segment (use vxlan across routers)"
        )

    def _install(self, nl: Netlink, lease: Lease, old: Lease | None) -> None:
        nl.replace_route(lease.subnet, self.iface.index, lease.public_ip)  # one step: no gap

    def _uninstall(self, nl: Netlink, lease: Lease) -> None:
        nl.delete_route(lease.subnet, self.iface.index, lease.public_ip)

    def _sweep(self, nl: Netlink, keep: dict[IPv4Network, Lease]) -> None:
        """Routes via a gateway on the interface, inside the Network, for subnets now gone."""
        for route in gateway_routes(nl, self.iface.index, self.config.network, set(keep)):
            log.info("host-gw: removing stale route to %s via %s", route.dst, route.gateway)
            nl.delete_route(route.dst, self.iface.index, route.gateway)
