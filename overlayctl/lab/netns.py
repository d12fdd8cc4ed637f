"""The lab LAN: a bridge inside its own "switch" namespace, one veth per host namespace.

Nothing here creates an interface, address or route in the root namespace: every `ip` call
names a lab namespace (`ip -n`), and host ends are created directly inside their namespace.
"""

from __future__ import annotations

from pathlib import Path

from overlayctl.lab.system import run

NETNS_DIR = Path("/run/netns")
BRIDGE = "br0"


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete(name: str) -> None:
    if exists(name):
        run(["ip", "netns", "delete", name], check=False)


def create_switch(switch: str) -> None:
    """A namespace holding the LAN bridge (no address: it only switches frames)."""
    add(switch)
    run(["ip", "-n", switch, "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "-n", switch, "link", "set", BRIDGE, "up"])


def attach(switch: str, port: str, host_ns: str, cidr: str, iface: str = "eth0") -> None:
    """Plug HOST_NS into the switch: PORT on the bridge, IFACE with CIDR inside the host."""
    run(
        [
            "ip",
            "-n",
            switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            iface,
            "netns",
            host_ns,
        ]
    )
    run(["ip", "-n", switch, "link", "set", port, "master", BRIDGE, "up"])
    run(["ip", "-n", host_ns, "addr", "add", cidr, "dev", iface])
    run(["ip", "-n", host_ns, "link", "set", iface, "up"])


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """ARGV run inside namespace NAME."""
    return ["ip", "netns", "exec", name, *argv]
