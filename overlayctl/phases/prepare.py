"""prepare: the host itself. Its name and /etc/hosts with every node, IPv4 forwarding now and
at boot, the static-IP file when the inventory has `ifcfg` (applied only with
--restart-network). Nothing restarts. The host firewall is a phase of its own (firewall.py).
"""

from __future__ import annotations

from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.phases.base import HostPhase, OnHost, PlanInput
from overlayctl.plan.changes import Action
from overlayctl.remote.ssh import Remote

_BASICS = (hp.HOSTNAME, hp.HOSTS, hp.SYSCTL)


def static_ip(path: str) -> bool:
    return path.startswith((hp.RHEL_IFCFG_DIR, hp.DEBIAN_INTERFACES_DIR))


class Prepare(HostPhase):
    name: ClassVar[str] = "prepare"

    def owns(self, path: str) -> bool:
        return path in _BASICS or static_ip(path)

    def actions(self, inp: PlanInput) -> list[Action]:
        host, facts = inp.host, inp.facts
        actions = []
        if facts.hostname != host.name:
            actions.append(Action(self.name, "hostname", host.name))
        if not facts.ip_forward:
            actions.append(Action(self.name, "sysctl", "net.ipv4.ip_forward=1"))
        if any(static_ip(p) for p in inp.changed) and inp.restart_network and host.iface:
            actions.append(Action(self.name, "restart-network", host.iface))
        return actions

    def act(self, on: OnHost, action: Action) -> None:
        remote = on.remote
        if action.kind == "hostname":
            if remote.run(["hostnamectl", "set-hostname", action.target], check=False).code:
                remote.run(["hostname", action.target])
        elif action.kind == "sysctl":
            remote.run(["sysctl", "-w", action.target])
        elif action.kind == "restart-network":
            _restart_network(remote, action.target, on.family)
        else:
            super().act(on, action)


def _restart_network(remote: Remote, iface: str, family: str) -> None:
    if family == "debian":
        remote.run(["sh", "-c", 'ifdown "$1"; ifup "$1"', "sh", iface])
    else:
        remote.run(["nmcli", "connection", "reload"])
        remote.run(["nmcli", "device", "reapply", iface])
