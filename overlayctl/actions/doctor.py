"""`overlayctl doctor`: read-only. etcd's network config and leases through the first member
that answers, then every host's facts (one round trip each, in parallel), then the probes (all
hosts at once: each listens while the others send), then the pure checks over all of it.

Nothing here writes to a host: no lock is taken, no file, rule, route or process is left (the
probe script undoes its tracefs instance itself). Which hosts doctor looks at is validated
before any host is contacted.
"""

from __future__ import annotations

import time

from overlayctl.doctor import checks
from overlayctl.doctor.context import Context
from overlayctl.doctor.dataplane import data_plane
from overlayctl.doctor.facts import gather_facts
from overlayctl.doctor.model import DoctorReport
from overlayctl.doctor.probes import plan_probes, probe_host
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.inventory.model import Host
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote


def _read_etcd(session: Session, ctx: Context, report: DoctorReport) -> None:
    """The network config and the leases, from the first etcd member that answers."""
    inv = session.inv
    why = "no etcd member is reachable over SSH"
    for member in inv.etcd_members:
        remote = session.remotes.get(member.name)
        if remote is None:
            continue
        try:
            ctx.network_config = etcd_cluster.network_config(remote, inv, timeout=20)[1]
        except OverlayctlError as exc:
            why = f"{member.name}: {exc}"
            continue
        try:
            ctx.leases = etcd_cluster.leases(remote, inv)
        except OverlayctlError as exc:
            why = f"{member.name}: cannot read the leases: {exc}"
            continue
        ctx.leases_known = True
        return
    report.errors.append({"host": None, "phase": "etcd", "message": why})
    report.notes.append("etcd could not be read: the lease checks were skipped")


def run_doctor(session: Session, hosts: list[str], pairs: list[tuple[str, str]]) -> DoctorReport:
    inv = session.inv
    report = DoctorReport(hosts=list(hosts))
    session.open()
    ctx = Context(inv=inv, plane=data_plane(None, inv), hosts=list(hosts), pairs=[],
                  now=time.time())  # fmt: skip
    _read_etcd(session, ctx, report)
    ctx.plane = data_plane(ctx.network_config, inv)
    wanted = [h for h in inv.hosts if h.name in hosts]
    live = [h for h in wanted if h.name in session.remotes]
    facts = session.each("facts", lambda h, r: gather_facts(r, h, ctx.plane, ctx.leases), live)
    ctx.facts = dict(facts.succeeded)
    answered = set(ctx.facts)
    ctx.pairs = [(a, b) for a, b in pairs if a in answered and b in answered]
    plans = plan_probes(ctx)

    def probe(host: Host, remote: Remote):
        return probe_host(remote, plans[host.name])

    # Every host at once: each listens for the others' probes while it sends its own.
    probed = session.each("probe", probe, [h for h in live if h.name in plans],
                          parallel=max(1, len(plans)))  # fmt: skip
    ctx.probes = dict(probed.succeeded)
    for failure in session.failures:
        if failure.host in hosts:
            report.errors.append(
                {"host": failure.host, "phase": failure.phase, "message": failure.error}
            )
    for module in checks.ALL:
        report.findings += module.run(ctx)
    report.notes += _probe_notes(ctx)
    return report


def _probe_notes(ctx: Context) -> list[str]:
    """How the probes looked, per host: the kernel's drop reasons (tracefs) or counters only."""
    notes = []
    for name in ctx.hosts:
        probe = ctx.probes.get(name)
        note = getattr(probe, "note", "") if probe is not None else ""
        if note:
            notes.append(f"{name}: {note}")
    return notes
