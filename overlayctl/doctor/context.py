"""What the checks look at: the inventory's expectations, etcd's leases and network config, and
per host the facts and probe results gathered. Built once by the runner; checks only read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory.model import Inventory

if TYPE_CHECKING:
    from overlayctl.doctor.facts import HostFacts
    from overlayctl.doctor.probes import ProbeReport


@dataclass(frozen=True)
class DataPlane:
    """What the agents run on: etcd's network config, else the inventory's."""

    backend: str  # vxlan | host-gw | udp
    network: str  # e.g. 172.21.0.0/16
    subnet_len: int
    port: int | None  # vxlan 8472 (or the configured Port), udp 8285; host-gw None
    vni: int | None  # vxlan only
    directrouting: bool = False


@dataclass
class Context:
    inv: Inventory
    plane: DataPlane
    hosts: list[str]  # the node hosts doctor looks at (all, or those given)
    pairs: list[tuple[str, str]]  # ordered (src, dst) pairs to probe, src != dst
    leases: list[LeaseInfo] = field(default_factory=list)
    leases_known: bool = False  # False: etcd could not be read; lease checks say nothing
    network_config: dict[str, Any] | None = None
    facts: dict[str, HostFacts] = field(default_factory=dict)  # per host that answered
    probes: dict[str, ProbeReport] = field(default_factory=dict)  # per host that answered
    now: float = 0.0  # the workstation's clock (epoch s), for certificate validity

    def address(self, name: str) -> str:
        return next(str(h.address) for h in self.inv.hosts if h.name == name)

    def lease_of(self, name: str) -> LeaseInfo | None:
        """NAME's lease. Two leases naming its PublicIP (a duplicate: the lease check reports
        it) are told apart by the subnet its agent holds (subnet.env), when the facts say."""
        mine = [lease for lease in self.leases if lease.host == name and not lease.error]
        facts = self.facts.get(name)
        held = facts.subnet if facts is not None else None
        return next((lease for lease in mine if held and lease.subnet == str(held.network)),
                    mine[0] if mine else None)  # fmt: skip
