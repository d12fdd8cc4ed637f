"""mtu (its configuration part; the path MTU probes are probes.py's): the MTUs that must agree
on a host: subnet.env's FLANNEL_MTU (the agent's: the underlay's MTU less the backend's
overhead), the overlay device's, docker0's, the running containers' eth0 (a few, from their
network namespaces) and the MTU docker runs with (dockerd's --mtu, /etc/docker/daemon.json's
"mtu", which the agent's /run/flannel/docker overrides only if dockerd reads it). Larger than
FLANNEL_MTU anywhere: packets the overlay cannot carry whole (an error); smaller: a warning."""

from __future__ import annotations

import re

from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts, overlay_device
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered

CHECK = "mtu"
RESTART_DOCKER = "systemctl restart docker (it reads --mtu from /run/flannel/docker)"


def _docker_mtu(f: HostFacts) -> tuple[int | None, str]:
    """The MTU dockerd runs with: its --mtu argument, else daemon.json's."""
    for i, arg in enumerate(f.dockerd_args):
        m = re.fullmatch(r"--mtu(?:=(\d+))?", arg)
        if m:
            value = m.group(1) or (f.dockerd_args[i + 1] if i + 1 < len(f.dockerd_args) else "")
            return (int(value), f"dockerd {arg}") if value.isdigit() else (None, "")
    mtu = f.daemon_json.get("mtu")
    return (mtu, "/etc/docker/daemon.json") if isinstance(mtu, int) else (None, "")


def _have(ctx: Context, f: HostFacts) -> list[tuple[str, int, str]]:
    """(what, MTU, fix) for every MTU on the host that should equal FLANNEL_MTU."""
    have = []
    dev = overlay_device(ctx.plane)
    # A bridge takes the smallest MTU of its ports: docker0 without a container keeps 1500 and
    # carries nothing, so only a bridge with ports is judged (its containers are, below, too).
    bridged = any(link.get("master") == "docker0" for link in f.links or [])
    for name in ([dev] if dev else []) + (["docker0"] if bridged else []):
        link = f.link(name)
        if link and isinstance(link.get("mtu"), int):
            fix = RESTART_DOCKER if name == "docker0" else "systemctl restart overlay-agent"
            have.append((f"{name}'s MTU", link["mtu"], fix))
    mtu, where = _docker_mtu(f)
    if mtu is not None and f.docker_unit.get("ActiveState") == "active":
        have.append((f"docker's MTU ({where})", mtu, RESTART_DOCKER))
    for c in f.containers or []:
        if isinstance(c.get("eth0_mtu"), int) and "bridge" in c.get("networks", {}):
            have.append(
                (
                    f"container {c.get('name')}'s eth0",
                    c["eth0_mtu"],
                    f"docker restart {c.get('name')} (after docker runs with the MTU)",
                )
            )
    return have


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        want = f.subnet_env.get("FLANNEL_MTU", "")
        if not want.isdigit():
            continue
        for what, mtu, fix in _have(ctx, f):
            if mtu == int(want):
                continue
            too_big = mtu > int(want)
            found.append(
                Finding(
                    name,
                    CHECK,
                    "error" if too_big else "warning",
                    f"{what} is {mtu}, the agent's FLANNEL_MTU {want}"
                    + (
                        ": larger packets do not fit the overlay"
                        if too_big
                        else ": smaller than the overlay carries (wasted, not broken)"
                    ),
                    f"subnet.env FLANNEL_MTU={want}; {what} {mtu}",
                    fix,
                    hop=f"{name} {what}",
                )
            )
    return found
