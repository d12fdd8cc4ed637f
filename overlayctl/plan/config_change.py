"""The network config in etcd against the inventory's, on a running cluster.

Agents read the config only when they start (as flanneld does), so a replaced config needs every
agent restarted; some keys (the Network, the subnet length, the etcd prefix) cannot change under
running agents at all. Both are decided here, before any phase of `init` runs, and shown by
`plan`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent.backends import BackendError, backend_class
from agent.subnet.config import parse_config
from overlayctl import paths as hostpaths
from overlayctl.errors import Conflict
from overlayctl.inventory.model import Host, Inventory
from overlayctl.inventory.network import network_config
from overlayctl.plan.changes import Action, HostPlan


@dataclass(frozen=True)
class ConfigChange:
    """The network config in etcd differs from the inventory's."""

    current: dict[str, Any]
    desired: dict[str, Any]

    def describe(self) -> str:
        old, new = (json.dumps(c, separators=(",", ":")) for c in (self.current, self.desired))
        gone = overlay_device(self.current)
        device = f", its {gone} removed" if gone and gone != overlay_device(self.desired) else ""
        return (
            f"etcd holds the network config {old}, the inventory wants {new}. Replacing it "
            f"restarts the agent on every node host{device} (leases are rewritten with the new "
            "backend), and docker where its flags change (the MTU); cross-host traffic stops "
            "until every host has restarted"
        )


def config_change(current: dict[str, Any] | None, inv: Inventory) -> ConfigChange | None:
    """CURRENT (the config in etcd; None: etcd not up, or no config yet) against INV's: the
    change, or None when they agree."""
    desired = network_config(inv)
    return ConfigChange(current, desired) if current is not None and current != desired else None


# Config keys that cannot change under running agents: every subnet, bip and container address
# follows from them.
_FIXED_KEYS = ("Network", "SubnetLen")
_PREFIX_LINE = re.compile(rb'^FLANNEL_ETCD_PREFIX="?([^"\n]*)"?$', re.M)


def refuse_fixed_changes(
    change: ConfigChange | None, plans: dict[str, HostPlan], inv: Inventory
) -> None:
    """cluster.network (and the subnet length) or cluster.etcd_prefix changed on a running
    cluster: no --force helps, the runbook says how to rebuild (Conflict)."""
    runbook = "follow docs/runbooks/change-network.md (reset, then init with the new inventory)"
    if change is not None:
        for key in _FIXED_KEYS:
            old, new = change.current.get(key), change.desired.get(key)
            if old != new:
                raise Conflict(
                    f"the network config's {key} cannot change on a running cluster (etcd has "
                    f"{old}, the inventory {new}): every subnet, docker bip and container "
                    f"address would change; {runbook}"
                )
    for name, plan in sorted(plans.items()):
        for file in plan.files:
            if file.path == hostpaths.ETCD_CONF and _peer_scheme(file.current.content) not in (
                None, _peer_scheme(file.desired.content),
            ):  # fmt: skip
                raise Conflict(
                    f"{name}: cluster.tls cannot change on a running cluster (its etcd peers "
                    "speak one scheme: members restarted one by one would reject each other); "
                    "to move a plain-http cluster to TLS, take it over as built by hand (issue "
                    f"#21, `overlayctl adopt`), or {runbook}"
                )
            found = _PREFIX_LINE.search(file.current.content or b"")
            if file.path in hostpaths.AGENT_ENV.values() and found:
                old_prefix = found.group(1).decode()
                if old_prefix != inv.cluster.etcd_prefix:
                    raise Conflict(
                        f"{name}: cluster.etcd_prefix cannot change on a running cluster (the "
                        f"agent uses {old_prefix}, the inventory {inv.cluster.etcd_prefix}): "
                        f"its leases live there; {runbook}"
                    )


_PEER_URLS = re.compile(rb'^ETCD_LISTEN_PEER_URLS="?(https?)://', re.M)


def _peer_scheme(etcd_conf: bytes | None) -> bytes | None:
    found = _PEER_URLS.search(etcd_conf or b"")
    return found.group(1) if found else None


def overlay_device(config: dict[str, Any]) -> str | None:
    """The overlay device an agent keeps for CONFIG (flannel.<VNI>, flannel0, or none)."""
    try:
        parsed = parse_config(json.dumps(config))
        return backend_class(parsed).device_for(parsed)
    except (ValueError, BackendError):
        return None


def config_change_actions(
    host: Host, current: dict[str, Any] | None, desired: dict[str, Any]
) -> list[Action]:
    """What replacing the network config in etcd (CURRENT -> DESIRED) means on HOST.

    Agents read the config only when they start (as flanneld does): each restarts, after the
    old backend's device goes (its routes go with it). docker follows in the docker phase when
    the flags the agent writes change (the MTU of a new backend). Empty when nothing changes.
    """
    if current is None or current == desired or not host.is_node:
        return []
    actions = []
    old, new = overlay_device(current), overlay_device(desired)
    if old and old != new:
        actions.append(Action("agent", "remove-device", old))
    actions.append(Action("agent", "restart", "overlay-agent"))
    return actions


def add_config_change(plans: dict[str, HostPlan], inv: Inventory, change: ConfigChange) -> None:
    """Each node host's agent restart (and the old device's removal), before any start of the
    agent the plan already has, without a second restart."""
    for host in inv.hosts:
        plan = plans.get(host.name)
        if plan is None:
            continue
        extra = config_change_actions(host, change.current, change.desired)
        if plan.wants("overlay-agent", "start", "restart"):
            extra = [a for a in extra if a.target != "overlay-agent"]
        at = next((i for i, a in enumerate(plan.actions) if a.target == "overlay-agent"
                   and a.kind in ("start", "restart")), len(plan.actions))  # fmt: skip
        plan.actions[at:at] = extra
