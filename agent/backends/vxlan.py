"""The vxlan backend (flannel's default): kernel VXLAN device ``flannel.<VNI>``.

Same device and per-lease entries as flannel, so it interoperates with flanneld on the wire:
the device has VNI and UDP port from the config (1, 8472), learning off, local = the external
interface's address, dev = that interface, MTU = its MTU - 50 and the address ``<subnet>.0/32``.
For every remote lease: a permanent ARP entry ``<remote>.0 -> VtepMAC``, an fdb entry
``VtepMAC -> PublicIP`` and the route ``<remote subnet> via <remote>.0 dev flannel.1 onlink``.

An existing device whose parameters match is reused, so its MAC (published as VtepMAC) stays
the same across agent restarts and the peers' entries stay valid. A new device gets its MAC
from the agent (random, locally administered), as flanneld does: a MAC the kernel picks is
replaced by systemd-udevd (MACAddressPolicy=persistent) just after creation on Debian 12 and
other systemd hosts, and the VtepMAC already published would be stale (every peer's frames
then dropped as for another host: seen on the vm tier's VMs, tests/vm).
"""

from __future__ import annotations

import logging
import os
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from agent.backends.base import Backend, BackendError, ExternalInterface
from agent.backends.peers import PeerTable, stale_routes, subnet_zero
from agent.net.netlink import Netlink, NetlinkError
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import Lease

log = logging.getLogger(__name__)

ENCAP_OVERHEAD = 50


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick, but set)."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


def _vtep_mac(lease: Lease) -> str | None:
    data = {str(k).lower(): v for k, v in (lease.backend_data or {}).items()}
    mac = data.get("vtepmac")
    if not isinstance(mac, str) or len(mac.split(":")) != 6:
        return None
    return mac.lower()


class VxlanBackend(PeerTable, Backend):
    """flannel's vxlan data plane on a kernel VXLAN device."""

    type_name = "vxlan"

    def __init__(self, config: NetworkConfig, iface: ExternalInterface) -> None:
        super().__init__(config, iface)
        self.vni = int(config.backend.get("VNI", 1))
        self.port = int(config.backend.get("Port", 8472)) or 8472
        self.device = self.device_for(config)
        self.own: Lease | None = None
        self.peers: dict[IPv4Network, Lease] = {}
        self.refused = 0
        self._index: int | None = None
        self._mac: str | None = None

    @classmethod
    def device_for(cls, config: NetworkConfig) -> str:
        return f"flannel.{int(config.backend.get('VNI', 1))}"

    @property
    def mtu(self) -> int:
        return self.iface.mtu - ENCAP_OVERHEAD

    # -- the device --------------------------------------------------------------------------

    def _wanted(self) -> dict[str, Any]:
        return {
            "IFLA_VXLAN_ID": self.vni,
            "IFLA_VXLAN_PORT": self.port,
            "IFLA_VXLAN_LOCAL": str(self.iface.address),
            "IFLA_VXLAN_LINK": self.iface.index,
            "IFLA_VXLAN_LEARNING": 0,
        }

    def _ensure_device(self, nl: Netlink) -> int:
        existing = nl.link(self.device)
        if existing is not None:
            data = existing["data"]
            wrong = [
                f"{key.removeprefix('IFLA_VXLAN_').lower()} {data.get(key)} (want {want})"
                for key, want in self._wanted().items()
                if existing["kind"] != "vxlan" or data.get(key) != want
            ]
            if not wrong:
                self._mac = existing["mac"]
                return int(existing["index"])
            log.warning(
                "%s exists with other parameters (%s): recreating it (its MAC changes)",
                self.device,
                ", ".join(wrong) if existing["kind"] == "vxlan" else f"kind {existing['kind']}",
            )
            nl.delete_link(self.device)
        index = nl.create_link(
            self.device,
            "vxlan",
            vxlan_id=self.vni,
            vxlan_port=self.port,
            vxlan_local=str(self.iface.address),
            vxlan_link=self.iface.index,
            vxlan_learning=0,
            mtu=self.mtu,
            address=random_mac(),
        )
        link = nl.link(self.device)
        self._mac = link["mac"] if link else None
        log.info(
            "created %s (VNI %d, port %d, MAC %s)", self.device, self.vni, self.port, self._mac
        )
        return index

    def backend_data(self) -> dict[str, Any]:
        """VNI and VtepMAC; creates (or adopts) the device first so the MAC is known."""
        if self._mac is None:
            with Netlink() as nl:
                self._index = self._ensure_device(nl)
        return {"VNI": self.vni, "VtepMAC": self._mac}

    def setup(self, own: Lease) -> None:
        self.own = own
        try:
            with Netlink() as nl:
                self._index = self._ensure_device(nl)
                nl.set_link(self._index, mtu=self.mtu)
                nl.ensure_only_address(self._index, IPv4Interface(f"{subnet_zero(own.subnet)}/32"))
        except NetlinkError as exc:
            raise BackendError(f"vxlan: cannot set up {self.device}: {exc}") from exc

    def teardown(self) -> None:
        with Netlink() as nl:
            nl.delete_link(self.device)  # its neighbours, fdb entries and routes go with it
        self.peers.clear()
        self._index = None
        self._mac = None

    # -- peers (PeerTable hooks) ---------------------------------------------------------------

    def _dev(self) -> int:
        if self._index is None or self.own is None:
            raise BackendError("vxlan: setup() must run before peers are added")
        return self._index

    def _require_setup(self) -> None:
        self._dev()

    def _verdict(self, nl: Netlink, lease: Lease) -> str | None:
        reason = super()._verdict(nl, lease)
        if reason == "" and _vtep_mac(lease) is None:
            return "its BackendData has no valid VtepMAC"
        return reason

    def _install(self, nl: Netlink, lease: Lease, old: Lease | None) -> None:
        mac = _vtep_mac(lease) or ""
        index = self._dev()
        gateway = subnet_zero(lease.subnet)
        # Neighbour and fdb first: the route must never make the kernel ARP for the .0.
        nl.replace_neighbour(index, gateway, mac)
        nl.replace_fdb(index, mac, lease.public_ip)
        nl.replace_route(lease.subnet, index, gateway, onlink=True)
        if old is not None and (_vtep_mac(old), old.public_ip) != (mac, lease.public_ip):
            nl.delete_fdb(index, _vtep_mac(old) or mac, old.public_ip)

    def _uninstall(self, nl: Netlink, lease: Lease) -> None:
        index = self._dev()
        gateway = subnet_zero(lease.subnet)
        nl.delete_route(lease.subnet, index, gateway)
        nl.delete_neighbour(index, gateway)
        mac = _vtep_mac(lease)
        if mac is not None:
            nl.delete_fdb(index, mac, lease.public_ip)

    def _sweep(self, nl: Netlink, keep: dict[IPv4Network, Lease]) -> None:
        """Routes, neighbours and fdb entries on the device that no current lease explains."""
        index = self._dev()
        for route in stale_routes(nl.routes(index), self.config.network, set(keep)):
            log.info("vxlan: removing stale route to %s", route.dst)
            nl.delete_route(route.dst, index, route.gateway)
        macs = {subnet_zero(s): _vtep_mac(x) for s, x in keep.items()}
        for neigh in nl.neighbours(index):
            if macs.get(neigh.ip) != neigh.mac:
                nl.delete_neighbour(index, neigh.ip)
        fdb = {(_vtep_mac(x), x.public_ip) for x in keep.values()}
        for entry in nl.fdb_entries(index):
            if (entry.mac, entry.ip) not in fdb:
                nl.delete_fdb(index, entry.mac, entry.ip)
