"""`overlayctl status`, a read-only survey: etcd (members, leader, health, DB size, the network
config, every lease) through the first member that answers, then each node host's own state:
the agent active and ready, docker running on the lease, the routes (and vxlan fdb entries) its
backend installs towards every peer."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from overlayctl import paths as hp
from overlayctl.doctor.expected import Route, missing_fdb, missing_routes
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd.cluster import ClusterStatus, LeaseInfo
from overlayctl.inventory.model import Host, Inventory
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote

SCRIPT = HostScript("host-status.sh")


@dataclass
class HostStatus:
    name: str
    agent_active: bool = False
    agent_ready: bool = False
    docker_active: bool = False  # docker's unit is active (docker0 outlives a stopped docker)
    lease: str = ""  # FLANNEL_SUBNET, e.g. 172.21.16.1/24
    mtu: int | None = None
    docker0: str = ""
    missing_routes: list[str] = field(default_factory=list)
    missing_fdb: list[str] = field(default_factory=list)  # vxlan peers without their fdb entry
    lease_in_etcd: bool = True  # False: subnet.env's lease is not (any more) in etcd
    # Its lease's backend in etcd, when the network config names another: the agent has not
    # restarted since the config changed (a run that stopped before every agent restarted).
    stale_backend: tuple[str, str] | None = None  # (the lease's, the config's)
    error: str = ""

    @property
    def bip_ok(self) -> bool:
        return bool(self.lease) and self.docker0 == self.lease

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[str]:
        """What is wrong on this host, in words (empty: healthy)."""
        if self.error:
            return [self.error]
        found = []
        if not self.agent_active:
            found.append("overlay-agent is not running")
        elif not self.agent_ready:
            found.append("overlay-agent is not ready (/readyz)")
        if not self.docker_active:
            found.append("docker is not running")
        if not self.lease:
            found.append("no lease in subnet.env")
        elif not self.bip_ok:
            found.append(f"docker0 is {self.docker0 or 'missing'}, not the lease's {self.lease}")
        elif not self.lease_in_etcd:
            found.append(f"its lease {self.lease} is not in etcd (deleted or expired)")
        if self.stale_backend:
            leased, configured = self.stale_backend
            found.append(
                f"its lease says backend {leased}, the network config {configured}: its agent "
                "has not restarted since the config changed (restart overlay-agent there)"
            )
        if self.missing_routes:
            found.append(f"missing routes to {', '.join(self.missing_routes)}")
        if self.missing_fdb:
            found.append(f"missing fdb entries for {', '.join(self.missing_fdb)}")
        return found


def parse(
    name: str,
    text: str,
    peers: list[LeaseInfo],
    backend: str | None = None,
    network: str | None = None,
    *,
    own_leases: list[str] | None = None,
) -> HostStatus:
    """Pure: the script's output + the other hosts' leases -> HostStatus. BACKEND and NETWORK
    (from the network config) say which routes (and, for vxlan, fdb entries) the agent should
    have installed. OWN_LEASES: the subnets etcd holds for this host (None: etcd unknown)."""
    st = HostStatus(name)
    routes, fdb = [], []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "route":
            routes.append(Route.parse(value))
        elif key == "fdb":
            fdb.append(value)
        elif key == "agent_active":
            st.agent_active = value == "active"
        elif key == "docker_active":
            st.docker_active = value == "active"
        elif key == "agent_ready":
            st.agent_ready = value == "200"
        elif key == "lease":
            st.lease = value
        elif key == "mtu" and value.isdigit():
            st.mtu = int(value)
        elif key == "docker0":
            st.docker0 = value
    own = str(ipaddress.ip_interface(st.lease).network) if st.lease else None
    others = [p for p in peers if p.subnet != own and not p.error]
    st.missing_routes = missing_routes(backend, network, routes, others)
    if backend == "vxlan":
        st.missing_fdb = missing_fdb(fdb, others)
    if own_leases is not None and own is not None:
        st.lease_in_etcd = own in own_leases
    mine = next((p for p in peers if p.subnet == own and not p.error), None)
    if backend and mine is not None and mine.backend and mine.backend != backend:
        st.stale_backend = (mine.backend, backend)
    return st


def host_status(
    remote: Remote,
    host: Host,
    leases: list[LeaseInfo],
    backend: str | None = None,
    network: str | None = None,
    *,
    known: bool = True,
) -> HostStatus:
    """KNOWN False: the leases could not be read (no quorum): no verdict on the own lease."""
    out = remote.script(SCRIPT, str(hp.AGENT_HEALTHZ_PORT), hp.SUBNET_ENV)
    peers = [lease for lease in leases if lease.host and lease.host != host.name]
    mine = [lease.subnet for lease in leases if lease.host == host.name]
    return parse(host.name, out.stdout, peers, backend, network,
                 own_leases=mine if known else None)  # fmt: skip


def cluster_status(session: Session) -> tuple[ClusterStatus, list[HostStatus]]:
    """etcd through the first member that answers over SSH, then every node host's own state."""
    inv = session.inv
    session.open()
    cluster = ClusterStatus(unreachable=[m.name for m in inv.etcd_members])
    for member in inv.etcd_members:
        remote = session.remotes.get(member.name)
        if remote is not None:
            cluster = etcd_cluster.status(remote, inv)
            break
    nodes = [h for h in inv.hosts if h.is_node]
    backend, network = _data_plane(cluster.network_config, inv)
    result = session.each(
        "status",
        lambda h, r: host_status(r, h, cluster.leases, backend, network, known=not cluster.errors),
        nodes,
    )
    hosts = [result.succeeded.get(h.name) or HostStatus(h.name, error=_why(session, h.name))
             for h in nodes]  # fmt: skip
    return cluster, hosts


def _why(session: Session, name: str) -> str:
    return next((f.error for f in session.failures if f.host == name), "not reachable")


def _data_plane(config: object, inv: Inventory) -> tuple[str, str]:
    """The backend and Network the agents run on: etcd's config, else the inventory's. The routes
    status expects on each host follow from them."""
    config = config if isinstance(config, dict) else {}
    backend = config.get("Backend")
    kind = backend.get("Type") if isinstance(backend, dict) else None
    network = config.get("Network")
    return (
        kind if isinstance(kind, str) else inv.cluster.backend,
        network if isinstance(network, str) else str(inv.cluster.network),
    )
