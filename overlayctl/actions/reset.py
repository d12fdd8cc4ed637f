"""`overlayctl reset [HOST...]`: undo what init did, host by host, the etcd cluster last; each
step undoes a phase (the phases' modules say how).

Per host: the agent is stopped and disabled and its data plane removed (flannel devices, routes
into the Network, the FLANNEL-* iptables chains), its lease deleted (reservations are kept),
every file overlayctl replaced is put back from /var/lib/overlayctl/backup (files it created
are removed), docker restarted on its own bridge, and, for an etcd member, the member removed
from the cluster (refused when that would break quorum, unless --force) and its data wiped.
A host leaving a cluster that stays also loses its etcd user (its certificate and password stop
working at once) and its address leaves the allow-list.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from agent.subnet.layout import subnet_key
from overlayctl import paths as hp
from overlayctl.errors import BadInput, OverlayctlError
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd import etcdctl, members
from overlayctl.etcd.auth import EtcdAuth
from overlayctl.etcd.members import with_members
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Host, Inventory
from overlayctl.inventory.network import network_config_key
from overlayctl.phases import agent, docker, etcd, firewall
from overlayctl.pki import Identities
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote


@dataclass
class ResetReport:
    done: dict[str, list[str]] = field(default_factory=dict)  # host -> what was undone


def targets(inv: Inventory, names: list[str]) -> list[Host]:
    known = {h.name: h for h in inv.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(f"reset: {', '.join(unknown)} not in the inventory")
    return [known[n] for n in names] if names else list(inv.hosts)


def _quorum_check(inv: Inventory, status: etcd_cluster.ClusterStatus, leaving: list[Host]) -> None:
    """Removing LEAVING must leave a majority of the remaining members healthy."""
    names = {h.name for h in leaving}
    remaining = [m for m in status.members if m.name not in names]
    healthy = sum(m.healthy for m in remaining)
    if remaining and healthy < len(remaining) // 2 + 1:
        raise OverlayctlError(
            f"reset: removing {', '.join(sorted(names))} leaves {healthy} healthy of "
            f"{len(remaining)} etcd members, below quorum; re-run with --force to do it anyway"
        )


@dataclass
class _Reset:
    """One reset: who leaves, who stays, and the member etcd is reached through."""

    session: Session
    report: ResetReport
    leaving: list[Host]
    force: bool
    whole: bool
    anchor: Remote | None  # a member that stays (any member, for the whole cluster)
    status: etcd_cluster.ClusterStatus
    etcd_inv: Inventory  # the cluster as its remaining members see it

    def done(self, name: str, *steps: str) -> None:
        self.report.done.setdefault(name, []).extend(steps)

    def live(self, hosts: list[Host]) -> list[Host]:
        return [h for h in hosts if h.name in self.session.remotes]


def run_reset(
    session: Session, names: list[str], force: bool, report: ResetReport | None = None
) -> ResetReport:
    """Undo init on NAMES (all hosts when empty); REPORT (filled as it goes) tells what was
    done when a step raises.

    The order cannot strand state: agents stop (else one takes its deleted lease back), then
    leases go (through the members that stay, retried), and only then members leave and files
    go. A host whose lease could not be deleted fails there with everything else still in
    place, so re-running the same reset finishes it.
    """
    inv = session.inv
    leaving = targets(inv, names)
    whole = len(leaving) == len(inv.hosts)
    report = report if report is not None else ResetReport()
    session.open()
    staying = [m for m in inv.etcd_members if m.name not in {h.name for h in leaving}]
    anchor = next((session.remotes[m.name] for m in (staying or inv.etcd_members)
                   if m.name in session.remotes), None)  # fmt: skip
    status = etcd_cluster.status(anchor, inv) if anchor else etcd_cluster.ClusterStatus()
    if not whole and not force:
        _quorum_check(inv, status, [h for h in leaving if h.is_etcd])
    # After members leave, talk only to the ones that stay (a removed member may still answer).
    etcd_inv = with_members(inv, staying) if staying and not whole else inv
    run = _Reset(session, report, leaving, force, whole, anchor, status, etcd_inv)
    stopped = _stop_agents(run)
    if anchor is not None and not whole:  # a whole cluster's leases go with etcd's data
        _forget_leases(run, anchor, stopped)
        _leave_cluster(run, anchor)
        _forget_identities(run, anchor)
    _restore_files(run)
    _wipe_etcd(run)
    if whole:
        run.done("cluster", f"etcd cluster gone; {network_config_key(inv)} went with it")
    return report


def _stop_agents(run: _Reset) -> list[Host]:
    """Agents stop and their data plane goes (devices, routes, chains); the hosts where so."""
    nodes = run.live([h for h in run.leaving if h.is_node])
    network = str(run.session.inv.cluster.network)
    stopped = run.session.each("agent", lambda _h, r: agent.uninstall(r, network), nodes)
    for name in stopped.succeeded:
        run.done(name, "agent stopped, data plane removed")
    return [h for h in nodes if h.name in stopped.succeeded]


def _forget_leases(run: _Reset, anchor: Remote, hosts: list[Host]) -> None:
    """Each stopped host's leases (reservations stay), through the members that stay."""
    inv = run.session.inv

    def forget(host: Host, _remote: Remote) -> list[str]:
        try:
            return _delete_leases(anchor, inv, run.etcd_inv, run.status.leases, host)
        except OverlayctlError as exc:
            if not run.force:
                raise
            return [f"lease NOT deleted ({exc}); --force went on"]

    deleted = run.session.each("lease", forget, hosts)
    for name, steps in deleted.succeeded.items():
        run.done(name, *steps)


def _leave_cluster(run: _Reset, anchor: Remote) -> None:
    """Members leaving a cluster that stays are removed from it before their files go."""
    listed = {m.name for m in run.status.members}
    for host in run.live([h for h in run.leaving if h.is_etcd and h.name in listed]):
        run.done(host.name, _leave(anchor, run.session.inv, run.etcd_inv, host, run.force))


def _forget_identities(run: _Reset, anchor: Remote) -> None:
    """The leaving hosts' etcd users deleted (their certificates and passwords stop working)
    and their identities gone from the state folder; the allow-list without their addresses.
    Only hosts still in the run: one whose lease could not be deleted keeps everything. Below
    quorum etcd cannot, and --force goes on without it (said on each host's line)."""
    inv = run.session.inv
    gone = run.live(run.leaving)
    leaving = {h.name for h in gone}
    auth = EtcdAuth(anchor, run.etcd_inv)
    staying = dataclasses.replace(inv, hosts=tuple(h for h in inv.hosts if h.name not in leaving))
    ids = Identities(state_dir(inv) / "pki")
    try:
        result = auth.ensure_allowlist(staying)
        if result != "unchanged":
            run.done("cluster", f"{result}: {inv.cluster.etcd_prefix}/allowed-public-ips")
        for host in gone if inv.cluster.tls else []:
            if auth.delete_user(host.name):
                run.done(host.name, "etcd user deleted")
            ids.forget(host.name)
    except OverlayctlError as exc:
        if not run.force:
            raise
        for host in gone:
            later = f"`overlayctl certs revoke {host.name}` once the cluster has quorum"
            run.done(host.name, f"etcd user NOT deleted ({exc}); --force went on: run {later}")


def _restore_files(run: _Reset) -> None:
    """Every file init replaced put back, the ones it created removed (the host firewall taken
    off first: its chains, its unit, firewalld's policies), docker back on its own bridge."""

    def undo(host: Host, remote: Remote) -> list[str]:
        firewall.undo(remote)  # chains and unit, firewalld's policies and services: before files go
        remote.restore_backups()
        remote.run(["rm", "-rf", hp.AGENT_HOME, hp.PKI_DIR, "/run/flannel"], check=False)
        remote.run(["rmdir", "--ignore-fail-on-non-empty", hp.PKI_DIR.rsplit("/", 1)[0]],
                   check=False)  # fmt: skip
        remote.run(["systemctl", "daemon-reload"])
        remote.run(["sh", "-c", "hostname -F /etc/hostname"], check=False)
        steps = ["files restored"]
        if host.is_node and docker.own_bridge(remote):
            steps.append("docker restarted on its own bridge")
        return steps

    result = run.session.each("reset", undo, run.live(run.leaving))
    for name, steps in result.succeeded.items():
        run.done(name, *steps)


def _wipe_etcd(run: _Reset) -> None:
    """etcd stopped and disabled, its data removed, on every leaving member."""
    for host in run.live([h for h in run.leaving if h.is_etcd]):
        etcd.wipe(run.session.remotes[host.name], host.name)
        run.done(host.name, "etcd stopped, data removed")


def _delete_leases(
    anchor: Remote,
    inv: Inventory,
    etcd_inv: Inventory,
    leases: list[etcd_cluster.LeaseInfo],
    host: Host,
    *,
    attempts: int = 3,
) -> list[str]:
    """Delete HOST's leases (reservations stay) through ETCD_INV's members, ATTEMPTS times at
    most each; raises when one cannot be deleted."""
    steps = []
    for lease in leases:
        if lease.host != host.name or lease.reservation or lease.error:
            continue
        key = subnet_key(inv.cluster.etcd_prefix, IPv4Network(lease.subnet))
        for attempt in range(1, attempts + 1):
            out = anchor.run([*etcdctl.base_argv(etcd_inv), "del", key], check=False, timeout=60)
            if out.code == 0:
                break
            if attempt == attempts:
                last = (out.stderr.strip().splitlines() or [f"exit {out.code}"])[-1]
                raise OverlayctlError(
                    f"lease {lease.subnet} not deleted after {attempts} tries ({last}); "
                    "nothing else was removed: re-run the reset"
                )
            time.sleep(2)
        steps.append(f"lease {lease.subnet} deleted")
    return steps


def _leave(anchor: Remote, inv: Inventory, staying: Inventory, host: Host, force: bool) -> str:
    """Remove HOST's member; below quorum etcd cannot, and --force goes on without it (the
    remaining members then still list it: `etcdctl member remove` once quorum is back)."""
    try:
        members.remove(anchor, inv, staying, host)
    except OverlayctlError as exc:
        if not force:
            raise
        return (
            f"etcd member NOT removed ({exc}); --force went on: remove it with `etcdctl member "
            "remove` once the cluster has quorum"
        )
    return "etcd member removed"
