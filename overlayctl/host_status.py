"""Per-host half of `status`: agent active and ready, docker0 on the lease, routes to peers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from overlayctl import hostpaths as hp
from overlayctl.etcd_cluster import LeaseInfo
from overlayctl.inventory_model import Host
from overlayctl.remote.ssh import Remote

# $1 healthz port, $2 subnet.env. key=value lines, then the IPv4 routes.
_SCRIPT = r"""
echo "agent_active=$(systemctl is-active overlay-agent 2>/dev/null)"
echo "agent_ready=$(python3 -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:%s/readyz" % sys.argv[1], timeout=2).status)
except Exception as exc:
    print(getattr(exc, "code", 0))' "$1")"
if [ -r "$2" ]; then . "$2"; echo "lease=$FLANNEL_SUBNET"; echo "mtu=$FLANNEL_MTU"; fi
echo "docker0=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}')"
ip -4 route show | sed 's/^/route=/'
"""


@dataclass
class HostStatus:
    name: str
    agent_active: bool = False
    agent_ready: bool = False
    lease: str = ""  # FLANNEL_SUBNET, e.g. 172.21.16.1/24
    mtu: int | None = None
    docker0: str = ""
    missing_routes: list[str] = field(default_factory=list)
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
        if not self.lease:
            found.append("no lease in subnet.env")
        elif not self.bip_ok:
            found.append(f"docker0 is {self.docker0 or 'missing'}, not the lease's {self.lease}")
        if self.missing_routes:
            found.append(f"missing routes to {', '.join(self.missing_routes)}")
        return found


def parse(name: str, text: str, peers: list[LeaseInfo]) -> HostStatus:
    """Pure: the script's output + the other hosts' leases -> HostStatus."""
    st = HostStatus(name)
    routes = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "route":
            routes.append(value.split()[0])
        elif key == "agent_active":
            st.agent_active = value == "active"
        elif key == "agent_ready":
            st.agent_ready = value == "200"
        elif key == "lease":
            st.lease = value
        elif key == "mtu" and value.isdigit():
            st.mtu = int(value)
        elif key == "docker0":
            st.docker0 = value
    own = ipaddress.ip_interface(st.lease).network if st.lease else None
    st.missing_routes = [
        p.subnet for p in peers
        if p.subnet != str(own) and not p.error and p.subnet not in routes
    ]  # fmt: skip
    return st


def host_status(remote: Remote, host: Host, leases: list[LeaseInfo]) -> HostStatus:
    out = remote.script(_SCRIPT, str(hp.AGENT_HEALTHZ_PORT), hp.SUBNET_ENV, name="host-status")
    peers = [lease for lease in leases if lease.host and lease.host != host.name]
    return parse(host.name, out.stdout, peers)
