"""`overlayctl join HOST...`: bring hosts newly listed in the inventory into a running cluster.

Joining hosts get every init phase; every other host gets its refreshed files (/etc/hosts, the
agent's endpoints: its agent restarts one host at a time) without any etcd restart. New etcd
members are added one at a time (phases/members.py), so a failed join leaves the cluster as it
was.
"""

from __future__ import annotations

from overlayctl.errors import BadInput
from overlayctl.etcd.members import with_members
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.agent import Agent
from overlayctl.phases.base import (
    HostPhase,
    Phase,
    Rolling,
    Rollout,
    RolloutOptions,
    RolloutReport,
)
from overlayctl.phases.connect import Connect
from overlayctl.phases.docker import Docker
from overlayctl.phases.engine import run_phases, timed
from overlayctl.phases.etcd import Etcd, NetworkConfig
from overlayctl.phases.etcd_auth import AllowList, AuthEnable, EtcdUsers
from overlayctl.phases.facts import Gather
from overlayctl.phases.firewall import Firewall
from overlayctl.phases.members import AddMembers, EtcdQuorum
from overlayctl.phases.packages import Packages
from overlayctl.phases.pki import PushPki
from overlayctl.phases.prepare import Prepare
from overlayctl.remote.session import Session


def check_names(inv: Inventory, names: list[str]) -> None:
    known = {h.name for h in inv.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(f"join: {', '.join(unknown)} not in the inventory; add them there first")
    joining = set(names)
    if any(inv.host(n).is_etcd for n in names) and not [
        m for m in inv.etcd_members if m.name not in joining
    ]:
        raise BadInput("join: no running etcd member would be left to join; use `init`")


def run_join(
    session: Session, names: list[str], options: RolloutOptions, report: RolloutReport | None = None
) -> RolloutReport:
    """Add NAMES to the live cluster; REPORT (filled as it goes) tells what was done."""
    inv = session.inv
    check_names(inv, names)
    new_members = [inv.host(n) for n in names if inv.host(n).is_etcd]
    live = with_members(inv, [m for m in inv.etcd_members if m.name not in names])
    joining: dict[str, tuple[Host, ...]] = {}
    members = live.etcd_members
    for member in new_members:
        joining[member.name] = members
        members = (*members, member)
    rollout = Rollout(session, options, report if report is not None else RolloutReport())
    with timed(rollout.report):
        run_phases(rollout, join_phases(live, new_members, joining))
    return rollout.report


def join_phases(
    live: Inventory, new_members: list[Host], joining: dict[str, tuple[Host, ...]]
) -> list[Phase | HostPhase]:
    """LIVE: the cluster as it runs; NEW_MEMBERS join it in order; JOINING: each new member ->
    the members it joins with."""
    return [
        Connect(),
        # facts first: on a cluster built by hand they refuse at once (adopt takes it over),
        # where the quorum check would wait etcd_timeout for an https etcd that serves http
        Gather(read_config=False, joining=joining),
        EtcdQuorum(live),
        Prepare(),
        Packages(),
        Firewall(),
        PushPki(),
        Etcd(rolling=Rolling.SEPARATELY),
        AddMembers(live, new_members),
        NetworkConfig(via=live, quiet=True),
        AllowList(via=live),
        EtcdUsers(via=live),
        Agent(),
        AuthEnable(via=live),
        Docker(),
    ]
