"""prepare: the host itself. Its name and /etc/hosts with every node, IPv4 forwarding now and
at boot, the static-IP file when the inventory has `ifcfg` (applied only with
--restart-network), and on RHEL-family hosts with firewalld active, overlayctl's firewalld
services and zone, enabled in the zone of the underlay interface. Nothing restarts.
"""

from __future__ import annotations

from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.phases.base import HostPhase, OnHost, PlanInput
from overlayctl.plan.changes import Action
from overlayctl.plan.facts import Facts
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

FIREWALLD_RESET = HostScript("firewalld-reset.sh")
_BASICS = (hp.HOSTNAME, hp.HOSTS, hp.SYSCTL)


def static_ip(path: str) -> bool:
    return path.startswith((hp.RHEL_IFCFG_DIR, hp.DEBIAN_INTERFACES_DIR))


def firewalld_file(path: str) -> bool:
    return path.startswith(hp.FIREWALLD_DIR + "/")


class Prepare(HostPhase):
    name: ClassVar[str] = "prepare"

    def owns(self, path: str) -> bool:
        return path in _BASICS or static_ip(path) or firewalld_file(path)

    def keeps(self, path: str, facts: Facts) -> bool:
        """firewalld's files only where firewalld is active."""
        return facts.firewalld is not None or not firewalld_file(path)

    def actions(self, inp: PlanInput) -> list[Action]:
        host, facts = inp.host, inp.facts
        actions = []
        if facts.hostname != host.name:
            actions.append(Action(self.name, "hostname", host.name))
        if not facts.ip_forward:
            actions.append(Action(self.name, "sysctl", "net.ipv4.ip_forward=1"))
        if any(static_ip(p) for p in inp.changed) and inp.restart_network and host.iface:
            actions.append(Action(self.name, "restart-network", host.iface))
        return actions + self._firewalld(inp)

    def _firewalld(self, inp: PlanInput) -> list[Action]:
        """Reload firewalld when its files changed (so it knows them), then enable every service
        of ours that the zone of the host's underlay interface does not have yet (permanent +
        runtime)."""
        fw = inp.facts.firewalld
        if fw is None:
            return []
        actions = []
        if any(firewalld_file(p) for p in inp.changed):
            actions.append(Action(self.name, "reload", "firewalld"))
        zone = fw.zone_of(inp.facts.iface_of(inp.host.address))
        prefix, suffix = f"{hp.FIREWALLD_DIR}/services/", ".xml"
        for path in sorted(p for p in inp.desired if p.startswith(prefix)):
            service = path.removeprefix(prefix).removesuffix(suffix)
            if service not in fw.services.get(zone, frozenset()):
                actions.append(Action(self.name, "add-service", f"{service} zone={zone}"))
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
        elif action.kind == "reload":
            remote.run(["firewall-cmd", "--reload"], timeout=120, waiting_for="firewalld to reload")
        elif action.kind == "add-service":
            # `SERVICE zone=ZONE`: in the permanent config and at once in the runtime.
            service, zone = action.target.split(" zone=")
            for scope in (["--permanent"], []):
                remote.run(["firewall-cmd", *scope, f"--zone={zone}", f"--add-service={service}"])
        else:
            super().act(on, action)


def _restart_network(remote: Remote, iface: str, family: str) -> None:
    if family == "debian":
        remote.run(["sh", "-c", 'ifdown "$1"; ifup "$1"', "sh", iface])
    else:
        remote.run(["nmcli", "connection", "reload"])
        remote.run(["nmcli", "device", "reapply", iface])


def undo_firewalld(remote: Remote) -> None:
    """reset: take overlayctl's services out of every zone, remove its firewalld files, reload
    (before the files go: a zone naming a missing service is refused at the next reload)."""
    remote.script(FIREWALLD_RESET, hp.FIREWALLD_DIR, check=False, timeout=120)
