"""`overlayctl join HOST...`: bring hosts newly listed in the inventory into a running cluster.

Joining hosts get every init phase; every other host gets its refreshed files (/etc/hosts, the
agent's endpoints) without any etcd restart. New etcd members are added one at a time: `member
add` on the live cluster, then the new member starts with ETCD_INITIAL_CLUSTER_STATE=existing and
must become healthy; if it does not, it is removed again, so the cluster is left as it was.
"""

from __future__ import annotations

from overlayctl import apply
from overlayctl import paths as hostpaths
from overlayctl.errors import BadInput, OverlayctlError
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd import members, netconfig
from overlayctl.etcd.members import with_members
from overlayctl.init import (
    AGENT_PHASES,
    ETCD_PHASES,
    InitOptions,
    InitReport,
    apply_plans,
    ensure_pki,
    gather_plans,
    timed,
)
from overlayctl.inventory.model import Host, Inventory
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote


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
    session: Session, names: list[str], options: InitOptions, report: InitReport | None = None
) -> InitReport:
    """Add NAMES to the live cluster; REPORT (filled as it goes) tells what was done."""
    report = report if report is not None else InitReport()
    with timed(report):
        _join(session, names, options, report)
    return report


def _join(session: Session, names: list[str], options: InitOptions, report: InitReport) -> None:
    inv = session.inv
    check_names(inv, names)
    new_members = [inv.host(n) for n in names if inv.host(n).is_etcd]
    live = with_members(inv, [m for m in inv.etcd_members if m.name not in names])
    joining: dict[str, tuple[Host, ...]] = {}
    members = live.etcd_members
    for m in new_members:
        joining[m.name] = members
        members = (*members, m)

    session.open()
    first = session.remotes.get(live.etcd_members[0].name)
    if first is None:
        raise OverlayctlError(f"join: etcd member {live.etcd_members[0].name} is not reachable")
    # A cluster with one member down still takes new hosts (and members) while it has quorum.
    etcd_cluster.wait_healthy(first, live, options.etcd_timeout, quorum_only=True)
    pki = ensure_pki(inv, session)
    report.plans = gather_plans(session, pki, restart_network=False, joining=joining,
                                report=report)  # fmt: skip
    report.changes = dict.fromkeys(report.plans, 0)
    for name, plan in report.plans.items():
        if name not in names and plan.wants("etcd", "start", "restart"):
            session.reporter.host(name, "etcd", "needs an etcd restart: run `overlayctl init`")
    apply_plans(session, report, ETCD_PHASES)
    running = list(live.etcd_members)
    for member in new_members:
        remote = session.remotes.get(member.name)
        if remote is None:
            raise OverlayctlError(f"join: {member.name} failed before etcd; nothing was added")
        _add_member(session, first, remote, member, running=running, options=options)
        running.append(member)
        report.changes[member.name] += 1
    report.network_config = netconfig.ensure(first, inv, force=False)
    apply_plans(session, report, AGENT_PHASES)


def _add_member(
    session: Session,
    first: Remote,
    remote: Remote,
    member: Host,
    *,
    running: list[Host],
    options: InitOptions,
) -> None:
    """Add MEMBER to the cluster of RUNNING members, or leave that cluster exactly as it was."""
    live = with_members(session.inv, running)
    member_id = members.add(first, live, member)
    session.reporter.host(member.name, "etcd", f"added as member {member_id}; starting")
    grown = with_members(session.inv, [*running, member])
    try:
        apply.restart_unit(remote, "etcd", wait=True)
        took = etcd_cluster.wait_healthy(
            first, grown, options.etcd_timeout, quorum_only=True, required=(member.name,)
        )
    except OverlayctlError as exc:
        members.remove_id(first, live, member_id)
        remote.run(["systemctl", "stop", "etcd"], check=False, waiting_for="etcd to stop")
        remote.run(["rm", "-rf", hostpaths.etcd_data_dir(member.name)], check=False)
        raise OverlayctlError(
            f"join: {member.name} could not join etcd ({exc}); it was removed again and the "
            "cluster is as it was"
        ) from None
    session.reporter.host(member.name, "etcd", f"joined, cluster healthy ({took:.1f} s)")
