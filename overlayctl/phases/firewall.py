"""firewall: the host firewall, before etcd starts (plan/firewall.py says what it lets in).

Where firewalld is active, overlayctl's two policies (files, then a reload); an older
release's firewalld services and ACCEPT zone are taken out on the way. firewalld older than
0.9 (CentOS 7: 0.6) has no policies: such a host is refused, naming the way out (the seed's
runbook stops firewalld; the iptables rules then do the job). Elsewhere, with
cluster.host_firewall, the iptables rules and overlayctl-firewall.service that loads them at
boot, (re)started here when either changed; without it, a unit left by an earlier run is
stopped and its files removed. A re-run with everything in place does nothing.
"""

from __future__ import annotations

from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.phases.base import HostPhase, OnHost, PlanInput, Probe, Restart, Rolling
from overlayctl.plan.changes import Action, service_actions
from overlayctl.plan.facts import Facts
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

FIREWALL_RESET = HostScript("firewall-reset.sh")
_IPTABLES = (hp.FIREWALL_RULES, hp.FIREWALL_UNIT)
_UNIT = hp.FIREWALL_UNIT_NAME


def firewalld_file(path: str) -> bool:
    return path.startswith(hp.FIREWALLD_DIR + "/")


class Firewall(HostPhase):
    name: ClassVar[str] = "firewall"
    restart = Restart(_UNIT, Rolling.AT_ONCE)  # a restart reloads rules; no service stops

    unit_file_only: ClassVar[bool] = True

    def owns(self, path: str) -> bool:
        return path in _IPTABLES or firewalld_file(path)

    def keeps(self, path: str, facts: Facts) -> bool:
        """firewalld's files where it is active, the iptables ones everywhere else."""
        return (facts.firewalld is not None) == firewalld_file(path)

    def actions(self, inp: PlanInput) -> list[Action]:
        fw = inp.facts.firewalld
        if fw is not None:
            if not fw.has_policies:
                raise OverlayctlError(
                    f"{inp.host.name}: firewalld {fw.version} has no policies (0.9 or newer, "
                    "RHEL 8.3+): stop and disable firewalld (as the seed's runbook does) and "
                    "overlayctl installs its iptables rules instead (cluster.host_firewall)"
                )
            actions = []
            if fw.legacy():
                actions.append(Action(self.name, "remove-legacy", "firewalld services and zone"))
            if any(firewalld_file(p) for p in inp.changed):
                actions.append(Action(self.name, "reload", "firewalld"))
            return actions
        if hp.FIREWALL_UNIT in inp.desired:
            return service_actions(
                self.name, _UNIT, inp.facts, reload=hp.FIREWALL_UNIT in inp.changed,
                restart=bool(inp.changed & set(_IPTABLES)), fresh=False,
            )  # fmt: skip
        state = inp.facts.units.get(_UNIT)
        if state is not None and (state.active == "active" or state.enabled == "enabled"):
            return [Action(self.name, "remove", _UNIT)]  # host_firewall turned off
        return []

    def act(self, on: OnHost, action: Action) -> None:
        if action.kind == "reload":
            reload_firewalld(on.remote)
        elif action.kind == "remove-legacy":
            undo(on.remote, "legacy")
        elif action.kind == "remove":
            undo(on.remote, "iptables")
        else:
            super().act(on, action)

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        on.remote.run(["systemctl", "restart", _UNIT], timeout=60,
                      waiting_for="the host firewall's rules to load")  # fmt: skip


def reload_firewalld(remote: Remote) -> None:
    remote.run(["firewall-cmd", "--reload"], timeout=120, waiting_for="firewalld to reload")


def undo(remote: Remote, what: str = "all") -> None:
    """Take the host firewall off (WHAT: all, legacy or iptables; see firewall-reset.sh)."""
    remote.script(
        FIREWALL_RESET, hp.FIREWALLD_DIR, what, _UNIT, hp.FIREWALL_UNIT, hp.FIREWALL_RULES,
        hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN, check=what != "all", timeout=120,
        waiting_for="the host firewall to be taken off",
    )  # fmt: skip
