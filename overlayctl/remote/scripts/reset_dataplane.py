"""Run on a host with `python3 -c` (reset, after the agent stopped): remove the agent's data
plane: every flannel device, every route into the overlay Network except docker0's, and the
FLANNEL-* iptables chains with the jumps to them. Failures are ignored: whatever is gone is gone.
Standard library only, Python 3.9.

    python3 -c "$(cat reset_dataplane.py)" NETWORK
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import sys


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def main(network: str) -> None:
    net = ipaddress.IPv4Network(network)
    for line in run("ip", "-o", "link", "show").splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name == "flannel0" or name.startswith("flannel."):
            run("ip", "link", "delete", name)
    for line in run("ip", "-4", "route", "show").splitlines():
        dst = line.split()[0]
        if dst != "default" and "docker0" not in line and ipaddress.IPv4Network(dst).subnet_of(net):
            run("ip", "route", "delete", dst)
    for table, parent, chain in (
        ("filter", "FORWARD", "FLANNEL-FWD"),
        ("nat", "POSTROUTING", "FLANNEL-POSTRTG"),
    ):
        for rule in run("iptables", "-t", table, "-S", parent).splitlines():
            words = shlex.split(rule)
            if words[-2:] == ["-j", chain]:
                run("iptables", "-t", table, "-D", *words[1:])
        run("iptables", "-t", table, "-F", chain)
        run("iptables", "-t", table, "-X", chain)


if __name__ == "__main__":
    main(sys.argv[1])
