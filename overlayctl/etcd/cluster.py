"""etcd as a whole: its health (and waiting for it), and its state for `status`: members,
leader, the network config and every lease. All through `etcdctl` on one member over SSH.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from agent.subnet.layout import LeaseDecodeError, decode_lease, subnets_dir
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.inventory.endpoints import etcd_client_urls
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config_key
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

LEASE_TTLS = HostScript("lease-ttls.sh")


@dataclass
class MemberStatus:
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    healthy: bool = False
    leader: bool = False
    db_size: int | None = None
    version: str = ""
    error: str = ""


@dataclass(frozen=True)
class LeaseInfo:
    subnet: str
    public_ip: str
    backend: str
    expires_in_s: int | None  # None: a reservation (no TTL)
    host: str | None  # the inventory host with that PublicIP; None: stale
    error: str = ""  # the value could not be read as a lease
    vtep_mac: str = ""  # vxlan: the peer's VtepMAC (BackendData), which its fdb entry names

    @property
    def reservation(self) -> bool:
        return self.expires_in_s is None and not self.error


@dataclass
class ClusterStatus:
    members: list[MemberStatus] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)  # inventory endpoints not answering
    network_config: dict[str, Any] | None = None
    network_config_raw: str | None = None
    leases: list[LeaseInfo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # reads that failed (no quorum, ...)

    @property
    def healthy(self) -> bool:
        return (
            bool(self.members)
            and all(m.healthy for m in self.members)
            and not self.unreachable
            and not self.errors
        )

    @property
    def quorum(self) -> bool:
        """A majority of the members is healthy: etcd still answers, writes included."""
        return sum(m.healthy for m in self.members) > len(self.members) // 2

    @property
    def verdict(self) -> str:
        if self.healthy:
            return "healthy"
        return "degraded" if self.quorum else "unavailable"


def health(
    remote: Remote, inv: Inventory, endpoints: dict[str, str] | None = None
) -> dict[str, etcdctl.EndpointHealth]:
    """Health of every member, keyed by member name. ENDPOINTS: member name -> the client URL
    it serves now (adopt's rounds, init's after them: some http, some https; etcdctl's TLS
    options leave an http endpoint alone); by default the inventory's."""
    urls = endpoints or {
        host.name: url for host, url in zip(inv.etcd_members, etcd_client_urls(inv), strict=True)
    }
    args = etcdctl.endpoint_health(inv)[len(etcdctl.base_argv(inv)) :]  # endpoint health ...
    argv = [*etcdctl.base_argv(inv, list(urls.values())), *args]
    out = remote.run(argv, check=False, timeout=60)
    try:
        found = etcdctl.parse_health(out.stdout)
    except OverlayctlError:
        found = []
    owners = {url: name for name, url in urls.items()}
    by_name = {owners.get(h.endpoint, h.endpoint): h for h in found}
    for name, url in urls.items():
        by_name.setdefault(name, etcdctl.EndpointHealth(url, False, out.stderr.strip()[-200:]))
    return by_name


# Between two health polls (one etcdctl on a member): a new cluster is healthy about a second
# after its members start, and a 1 s poll made init wait up to a second more than etcd (2.4 s
# of a 3-host init's 8.3 s measured here).
HEALTH_POLL_S = 0.2


def wait_healthy(
    remote: Remote,
    inv: Inventory,
    timeout: float,
    quorum_only: bool = False,
    required: tuple[str, ...] = (),
    *,
    endpoints: dict[str, str] | None = None,
) -> float:
    """Poll until every member (QUORUM_ONLY: a majority, and the REQUIRED ones) is healthy;
    returns the seconds it took. Names the laggards when it gives up. ENDPOINTS: as health's."""
    started = time.monotonic()
    with remote.waiting("etcd to be healthy", phase="etcd") as beat:
        while True:
            state = health(remote, inv, endpoints)
            sick = {name: h for name, h in state.items() if not h.healthy}
            majority = len(sick) < len(state) - len(state) // 2
            if not sick or (quorum_only and majority and not sick.keys() & set(required)):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                detail = "; ".join(
                    f"{n} ({h.endpoint}): {h.error or 'unhealthy'}" for n, h in sick.items()
                )
                raise OverlayctlError(f"etcd not healthy after {timeout:.0f} s: {detail}")
            beat.what = f"etcd on {', '.join(sorted(sick))} to be healthy"
            time.sleep(HEALTH_POLL_S)


def status(remote: Remote, inv: Inventory) -> ClusterStatus:
    result = ClusterStatus()
    members = remote.run(etcdctl.member_list(inv), check=False, timeout=30)
    if members.code != 0:
        result.unreachable = [m.name for m in inv.etcd_members]
        result.errors.append(f"etcd member list failed: {last_line(members.stderr)}")
        return result
    statuses = {
        s.endpoint: s
        for s in etcdctl.parse_status(
            remote.run(etcdctl.endpoint_status(inv), check=False, timeout=30).stdout or "[]"
        )
    }
    healths = health(remote, inv)
    for m in etcdctl.parse_members(members.stdout):
        st = next((statuses[u] for u in m.client_urls if u in statuses), None)
        hl = healths.get(m.name)
        result.members.append(MemberStatus(
            name=m.name, peer_urls=m.peer_urls, client_urls=m.client_urls,
            healthy=bool(hl and hl.healthy), leader=bool(st and st.leader_id == st.member_id),
            db_size=st.db_size if st else None, version=st.version if st else "",
            error=hl.error if hl else "not in the inventory",
        ))  # fmt: skip
    listed = {m.name for m in result.members}
    result.unreachable = [h.name for h in inv.etcd_members if h.name not in listed]
    key = network_config_key(inv)
    if not result.quorum:  # every read would wait out etcdctl's timeout: say why instead
        healthy = sum(m.healthy for m in result.members)
        result.errors.append(
            f"no quorum ({healthy} of {len(result.members) + len(result.unreachable)} members "
            f"healthy): {key} and the leases cannot be read"
        )
        return result
    try:
        result.network_config_raw, result.network_config = network_config(remote, inv)
    except OverlayctlError as exc:
        # No quorum (or no member answering): say so, and keep every section filled so far.
        result.errors.append(str(exc))
        return result
    try:
        result.leases = leases(remote, inv)
    except OverlayctlError as exc:
        result.errors.append(f"cannot read the leases: {exc}")
    return result


def network_config(
    remote: Remote, inv: Inventory, timeout: float = 30
) -> tuple[str | None, dict[str, Any] | None]:
    """The network config as stored (None: absent) and as JSON (None: absent or not JSON).
    An etcd that does not answer raises, naming the key."""
    key = network_config_key(inv)
    got = remote.run(etcdctl.get_value(inv, key), check=False, timeout=timeout)
    if got.code != 0:
        raise OverlayctlError(f"cannot read {key}: {last_line(got.stderr)}")
    raw = etcdctl.parse_get(got.stdout)
    try:
        return raw, json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        return raw, None


def last_line(text: str) -> str:
    """The last line of an etcdctl error, for a one-line message."""
    return (text.strip().splitlines() or ["no answer"])[-1][:300]


def leases(remote: Remote, inv: Inventory) -> list[LeaseInfo]:
    """Every lease and reservation under <prefix>/subnets/, with its time left and its host."""
    prefix = subnets_dir(inv.cluster.etcd_prefix)
    kvs = etcdctl.parse_kvs(remote.run(etcdctl.get_prefix(inv, prefix)).stdout)
    ids = sorted({lease_id for _, _, lease_id in kvs if lease_id})
    ttls = {}
    if ids:
        out = remote.script(LEASE_TTLS, *etcdctl.base_argv(inv),
                            stdin="".join(f"{i:x}\n" for i in ids), check=False)  # fmt: skip
        ttls = etcdctl.parse_ttls(out.stdout)
    by_ip = {str(h.address): h.name for h in inv.hosts}
    found = []
    for key, value, lease_id in kvs:
        try:
            lease = decode_lease(key, value, lease_id)
        except LeaseDecodeError as exc:
            found.append(LeaseInfo(key.rsplit("/", 1)[-1], "", "", None, None, str(exc)))
            continue
        found.append(LeaseInfo(
            subnet=str(lease.subnet), public_ip=str(lease.public_ip),
            backend=lease.backend_type, expires_in_s=ttls.get(lease_id) if lease_id else None,
            host=by_ip.get(str(lease.public_ip)),
            vtep_mac=str((lease.backend_data or {}).get("VtepMAC") or "").lower(),
        ))  # fmt: skip
    return found
