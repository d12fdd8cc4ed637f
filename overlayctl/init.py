"""`overlayctl init` and `overlayctl plan`: from an inventory to a healthy etcd cluster holding
the overlay network config. Phases: connect+lock -> facts -> prepare -> packages -> pki -> etcd
-> network config. Every phase plans on facts first (plan.py), so a re-run changes nothing."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from overlayctl import agent_phase, apply, wheelhouse
from overlayctl import paths as hostpaths
from overlayctl.agent_phase import AgentBundle
from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd import members as etcd_members
from overlayctl.etcd import netconfig
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Host, Inventory
from overlayctl.output import plural
from overlayctl.phases.facts import gather
from overlayctl.pki import Member, Pki, foreign_cas
from overlayctl.plan.changes import (
    HostPlan,
    plan_host,
    wanted_packages,
)
from overlayctl.plan.config_change import (
    ConfigChange,
    add_config_change,
    config_change,
    refuse_fixed_changes,
)
from overlayctl.plan.facts import Facts
from overlayctl.plan.files import desired_files
from overlayctl.remote.session import RunOptions, Session
from overlayctl.remote.ssh import Remote

# Before the etcd cluster is (re)started, and after it holds the network config.
ETCD_PHASES = ("prepare", "packages", "pki", "etcd")
AGENT_PHASES = ("agent", "docker")


@dataclass
class InitOptions(RunOptions):
    restart_network: bool = False
    force: bool = False
    etcd_timeout: float = 90.0
    renew_certificates: bool = False  # `certs rotate`: new member and client certs, same CA


class Bundles:
    """The agent wheelhouse per (Python version, architecture), made once per run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str], AgentBundle] = {}
        self._agent_wheel: Path | None = None

    def get(self, python: str, arch: str) -> AgentBundle:
        with self._lock:
            if (python, arch) not in self._made:
                if self._agent_wheel is None:
                    self._agent_wheel = wheelhouse.build_agent_wheel(self.folder)
                deps = sorted(wheelhouse.find_dependencies(python, arch).glob("*.whl"))
                wheels = (*deps, self._agent_wheel)
                self._made[python, arch] = AgentBundle(wheels, wheelhouse.digest(list(wheels)))
            return self._made[python, arch]


@dataclass
class InitReport:
    plans: dict[str, HostPlan] = field(default_factory=dict)
    bundles: dict[str, AgentBundle] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    network_config: str = ""
    seconds: float = 0.0

    @property
    def total_changes(self) -> int:
        return sum(self.changes.values()) + (self.network_config in ("created", "replaced"))


def _resolve_host(inv: Inventory, host: Host, found: Facts) -> Host:
    """HOST with its detected OS family, after checking the inventory against the facts."""
    if found.iface_of(host.address) is None:
        # Catches NAT set-ups where every VM answers SSH on one address but owns another
        # (flannel #98: every node announcing Vagrant's 10.0.2.15).
        owned = ", ".join(f"{dev} {a}" for dev, addrs in found.addresses.items() for a in addrs)
        raise OverlayctlError(
            f"{host.name}: address {host.address} is not on any interface of the host "
            f"(it has: {owned or 'none'}); set hosts[].address to the underlay address"
        )
    holder = found.iface_of(host.address)
    if host.iface and host.iface != holder:
        raise OverlayctlError(
            f"{host.name}: address {host.address} is on {holder}, not on iface {host.iface!r}"
        )
    declared = host.os or inv.cluster.os
    if declared and declared != found.os_family:
        raise OverlayctlError(
            f"{host.name}: inventory says os {declared!r} but the host runs {found.os_id!r} "
            f"({found.os_family} family)"
        )
    return dataclasses.replace(host, os=found.os_family)


def gather_plans(
    session: Session,
    pki: Pki | None,
    restart_network: bool,
    joining: dict[str, tuple[Host, ...]] | None = None,
    report: InitReport | None = None,
    *,
    wheels_dir: Path | None = None,
) -> dict[str, HostPlan]:
    """Facts and current files from every live host -> a HostPlan each (hosts get their OS).

    JOINING: etcd members being added to a live cluster -> the members they join with.
    REPORT: where to keep each node host's agent bundle for the apply step.
    WHEELS_DIR: where the agent's wheel is built (default: the state folder; `plan` passes a
    temporary folder, as it writes nothing).
    """
    inv = session.inv
    joining = joining or {}
    bundles = Bundles(wheels_dir or state_dir(inv) / "wheels")

    def one(host: Host, remote: Remote) -> tuple[Host, HostPlan]:
        family = host.os or inv.cluster.os or "debian"
        both = wanted_packages(host, "debian") + wanted_packages(host, "rhel")
        found = gather(remote, sorted(set(both)))
        host = _resolve_host(inv, host, found)
        desired = desired_files(inv, host, pki, joining.get(host.name))
        current = remote.read_files(sorted(desired))
        family = found.os_family or family
        bundle = bundles.get(found.python, found.arch) if host.is_node else None
        if bundle is not None and report is not None:
            report.bundles[host.name] = bundle
        plan = plan_host(host, family, desired, current, found, restart_network=restart_network,
                         agent_digest=bundle.digest if bundle else None,
                         docker_mode=inv.cluster.docker_mode)  # fmt: skip
        return host, plan

    result = session.each("facts", one)
    resolved = {h.name: h for h, _ in result.succeeded.values()}
    session.inv = dataclasses.replace(inv, hosts=tuple(resolved.get(h.name, h) for h in inv.hosts))
    return {name: plan for name, (_, plan) in result.succeeded.items()}


def ensure_pki(
    inv: Inventory, session: Session, renew_leaves: bool = False, write: bool = True
) -> Pki | None:
    """The cluster's PKI, made or renewed where needed. WRITE False (`plan`): in memory only,
    reported as what would be made. Refused (Conflict) before anything is made or pushed when
    the hosts trust another CA than this state folder's."""
    if not inv.cluster.tls:
        return None
    _same_ca_everywhere(session, state_dir(inv) / "pki" / "ca.crt")
    pki = Pki(state_dir(inv), inv.cluster.name, write=write)
    members = [Member(h.name, str(h.address)) for h in inv.etcd_members]
    made = pki.ensure(members, renew_leaves=renew_leaves)
    if made:
        verb = "made" if write else "would make"
        session.reporter.say(f"{'local':<12} {'pki':<9} {verb} {', '.join(made)} in {pki.dir}")
    return pki


def _same_ca_everywhere(session: Session, local_ca: Path) -> None:
    """A second state folder (another copy of the inventory, `init` inside `lab shell`) would
    make a new CA and push it: etcd then restarts with certificates no peer trusts."""
    local = local_ca.read_bytes() if local_ca.exists() else None
    found = session.each(
        "pki", lambda _h, r: r.read_files([hostpaths.CA_CERT])[hostpaths.CA_CERT].content
    )
    foreign = foreign_cas(local, found.succeeded)
    if not foreign:
        return
    hosts = ", ".join(f"{host} (sha256 {fp})" for host, fp in sorted(foreign.items()))
    ours = f"holds another CA ({local_ca})" if local else f"has no CA yet (no {local_ca})"
    raise Conflict(
        f"the hosts trust a CA this state folder did not make: {hosts}; this state folder {ours}. "
        "Run from the state folder that set the cluster up (beside its inventory, or "
        "$OVERLAYCTL_STATE_DIR); overlayctl does not replace a running cluster's CA (reset the "
        "cluster first to start over)"
    )


def current_config_change(session: Session) -> ConfigChange | None:
    """Ask the first reachable etcd member; None when the configs agree or etcd is not up."""
    inv = session.inv
    remote = next((session.remotes[m.name] for m in inv.etcd_members
                   if m.name in session.remotes), None)  # fmt: skip
    return config_change(netconfig.current(remote, inv) if remote else None, inv)


def run_init(
    session: Session, options: InitOptions, report: InitReport | None = None
) -> InitReport:
    """Every phase on every host. REPORT (filled as it goes) still tells what was done when
    a phase raises."""
    report = report if report is not None else InitReport()
    with timed(report):
        _init_phases(session, options, report)
    return report


@contextmanager
def timed(report: InitReport) -> Iterator[None]:
    """REPORT.seconds is the block's time, however it ended (a summary after a failure too)."""
    started = time.monotonic()
    try:
        yield
    finally:
        report.seconds = time.monotonic() - started


def _init_phases(session: Session, options: InitOptions, report: InitReport) -> None:
    session.open()
    change = current_config_change(session)
    refuse_fixed_changes(change, {}, session.inv)
    if change is not None and not options.force:  # before any phase changes anything
        raise Conflict(f"{change.describe()}. Re-run with --force to do it")
    pki = ensure_pki(session.inv, session, renew_leaves=options.renew_certificates)
    report.plans = gather_plans(session, pki, options.restart_network, report=report)
    refuse_fixed_changes(None, report.plans, session.inv)
    if change is not None:
        add_config_change(report.plans, session.inv, change)
    report.changes = dict.fromkeys(report.plans, 0)
    apply_plans(session, report, ETCD_PHASES)
    _start_etcd(session, report, options)
    apply_plans(session, report, AGENT_PHASES)


def apply_plans(session: Session, report: InitReport, phases: tuple[str, ...]) -> None:
    """PHASES in order, hosts in parallel; etcd (re)starts are left to the caller."""
    for phase in phases:
        _apply_phase(session, report, phase)


def _apply_phase(session: Session, report: InitReport, phase: str) -> None:
    """PHASE on every live host at once. docker restarts at once where no container runs, and
    one host at a time where containers run (their outage never overlaps)."""
    deferred: set[str] = set()

    def one(host: Host, remote: Remote) -> int:
        ctx = apply.ApplyContext(family=host.os or "debian",
                                 bundle=report.bundles.get(host.name),
                                 docker_mode=session.inv.cluster.docker_mode,
                                 deferred=deferred if phase == "docker" else None)  # fmt: skip
        return apply.apply_phase(remote, report.plans[host.name], phase, ctx)

    result = session.each(phase, one, [h for h in session.alive if h.name in report.plans])
    for name, count in result.succeeded.items():
        report.changes[name] += count
        if count:
            session.reporter.host(name, phase, plural(count, "change"))
    for host in [h for h in session.alive if h.name in deferred]:
        session.each(phase, lambda h, r: _restart_docker_alone(session, h, r), [host])


def _restart_docker_alone(session: Session, host: Host, remote: Remote) -> None:
    started = time.monotonic()
    agent_phase.ensure_bip(remote, host.os or "debian", session.inv.cluster.docker_mode,
                           restart=True)  # fmt: skip
    took = time.monotonic() - started
    session.reporter.host(host.name, "docker", f"restarted alone (containers run), {took:.1f} s")


def _start_etcd(session: Session, report: InitReport, options: InitOptions) -> None:
    inv = session.inv
    members = inv.etcd_members
    lost = [m.name for m in members if m.name not in session.remotes]
    if lost:
        session.reporter.say(
            f"{'cluster':<12} {'etcd':<9} skipped: members not reachable: " + ", ".join(lost)
        )
        return
    to_start = [m for m in members if report.plans[m.name].wants("etcd", "start", "restart")]
    first = session.remotes[members[0].name]
    if to_start:
        running_before = any(not report.plans[m.name].wants("etcd", "start") for m in members)
        if running_before:  # a live cluster: one member at a time, keep quorum
            etcd_members.require(first, inv, to_start)
            for m in to_start:
                apply.restart_unit(session.remotes[m.name], "etcd", wait=True)
                etcd_cluster.wait_healthy(first, inv, options.etcd_timeout)
                report.changes[m.name] += 1
        else:  # a new cluster: every member must start together to reach quorum
            session.each("etcd", lambda h, r: apply.restart_unit(r, "etcd", wait=False), to_start)
            for m in to_start:
                report.changes[m.name] += 1
        took = etcd_cluster.wait_healthy(first, inv, options.etcd_timeout)
        session.reporter.say(
            f"{'cluster':<12} {'etcd':<9} {plural(len(members), 'member')} healthy "
            f"({took:.1f} s after start)"
        )
    else:
        etcd_cluster.wait_healthy(first, inv, options.etcd_timeout)
    report.network_config = netconfig.ensure(first, inv, options.force)
    session.reporter.say(
        f"{'cluster':<12} {'config':<9} {report.network_config}: {inv.cluster.etcd_prefix}/config"
    )
