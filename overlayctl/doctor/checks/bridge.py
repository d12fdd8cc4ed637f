"""bridge: docker's side of the overlay: docker not active, docker0 missing or not holding the
lease's .1 (subnet.env's FLANNEL_SUBNET, which the agent passes as --bip), and containers
attached elsewhere (another bridge, a user-defined network) whose addresses lie outside the
lease: the overlay routes only the lease's subnet to this host."""

from __future__ import annotations

import ipaddress

from overlayctl.doctor.context import Context
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered

CHECK = "bridge"
RESTART = "systemctl restart docker (it reads --bip from /run/flannel/docker as it starts)"


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        state = f.docker_unit.get("ActiveState", "")
        if state != "active":
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    f"docker is not running ({state or 'no unit'})",
                    f"systemctl show docker: {f.docker_unit}",
                    "systemctl start docker",
                    hop=f"{name} docker0",
                )
            )
        lease = f.subnet
        have = f.address_of("docker0")
        if f.link("docker0") is None:
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    "docker0 is missing",
                    "ip link: no docker0",
                    RESTART,
                    hop=f"{name} docker0",
                )
            )
        elif lease is not None and str(lease) not in have:
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error",
                    f"docker0 holds {', '.join(have) or 'no address'}, not the lease's {lease}",
                    f"subnet.env FLANNEL_SUBNET={lease}; ip addr show docker0: {have}",
                    RESTART,
                    hop=f"{name} docker0",
                )
            )
        if lease is None:
            continue
        for c in f.containers or []:
            for net, a in c.get("networks", {}).items():
                ip = a.get("ip")
                if ip and ipaddress.IPv4Address(ip) not in lease.network:
                    found.append(
                        Finding(
                            name,
                            CHECK,
                            "warning",
                            f"container {c.get('name')} is on docker network {net!r} at {ip}, "
                            f"outside the lease {lease.network}: the overlay does not reach it",
                            f"docker inspect {c.get('id')}: {net} {ip}/{a.get('prefix')}",
                            f"docker network connect bridge {c.get('name')} (or run it with "
                            "--network bridge)",
                            hop=f"{name} docker0",
                        )
                    )
    return found
