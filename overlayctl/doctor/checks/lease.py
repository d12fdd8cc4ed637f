"""lease: etcd's leases against each other and the inventory (only when etcd could be read):
two leases on one subnet, two on one PublicIP (flannel #98: each host routes the other's
subnet to itself), a lease whose PublicIP is no inventory host's (LeaseInfo.host None: written
from outside the cluster; the agents' allow-list refuses it), a node host without a lease."""

from __future__ import annotations

from collections import defaultdict

from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding

CHECK = "lease"


def _key(ctx: Context, subnet: str) -> str:
    return f"{ctx.inv.cluster.etcd_prefix}/subnets/{subnet.replace('/', '-')}"


def run(ctx: Context) -> list[Finding]:
    if not ctx.leases_known:
        return []
    found: list[Finding] = []
    leases = [x for x in ctx.leases if not x.error]
    by_subnet, by_ip = defaultdict(list), defaultdict(list)
    for x in leases:
        by_subnet[x.subnet].append(x)
        by_ip[x.public_ip].append(x)
    for subnet, same in by_subnet.items():
        if len(same) > 1:
            hosts = [x.host or x.public_ip for x in same]
            found.append(
                Finding(
                    hosts[0],
                    CHECK,
                    "error",
                    f"subnet {subnet} is leased twice",
                    f"PublicIPs {', '.join(x.public_ip for x in same)}",
                    f"etcdctl del {_key(ctx, subnet)} and restart both agents",
                    peer=hosts[1],
                )
            )
    for ip, same in by_ip.items():
        if len(same) > 1:
            host = same[0].host or ip
            found.append(
                Finding(
                    host,
                    CHECK,
                    "error",
                    f"PublicIP {ip} holds {len(same)} leases "
                    f"({', '.join(x.subnet for x in same)}): peers route them all to one host",
                    "; ".join(f"{x.subnet} expires in {x.expires_in_s} s" for x in same),
                    "delete all but the one in subnet.env on that host: "
                    + " ; ".join(f"etcdctl del {_key(ctx, x.subnet)}" for x in same[1:]),
                )
            )
    for x in leases:
        if x.host is None:
            found.append(
                Finding(
                    "etcd",
                    CHECK,
                    "warning",
                    f"lease {x.subnet} names PublicIP {x.public_ip}, "
                    "which is no inventory host's address (the agents' allow-list refuses it)",
                    f"{x.subnet} -> {x.public_ip}",
                    f"etcdctl del {_key(ctx, x.subnet)}",
                )
            )
    held = {x.host for x in leases}
    for h in ctx.inv.hosts:
        if h.is_node and h.name in ctx.hosts and h.name not in held:
            found.append(
                Finding(
                    h.name,
                    CHECK,
                    "error",
                    "no lease in etcd for this node host",
                    f"no lease has PublicIP {h.address}",
                    "systemctl restart overlay-agent (it leases a subnet)",
                    hop=h.name,
                )
            )
    return found
