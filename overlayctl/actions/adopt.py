"""`overlayctl adopt`: take over a cluster built by hand from the seed runbook and end where
`init` would have, keeping every subnet, every container's address and etcd's members and data
(docs/design/adopt.md, docs/runbooks/adopt.md).

Two parts, one session. First what reads and decides, and nothing else: connect, facts (with
what the hand-built cluster has: plan/handbuilt.py), then `Preflight`, which runs the import's
decision and every host's takeover plan, so that every refusal comes before the first change.
`adopt` prints that plan and asks (unless --yes). Then the hand-over: PKI pushed, etcd's peers
moved to TLS member by member (PeerTls), flanneld's v2 config and leases copied into v3
(ImportV2), one host at a time flanneld replaced by the agent on the same subnet and docker's
hand edits by our drop-in (TakeOver), the v2 keys saved and deleted once no flanneld runs
(DropV2); and then init's own phases from a fresh look at the hosts, which take etcd's clients
to TLS, the agents to their certificates and authentication on. Outage probes run from before
the first change to the end.

Every step re-derives where it stands from the hosts, so a re-run after a cut resumes, and a
re-run on an adopted cluster is an init re-run: 0 changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from overlayctl import paths as hp
from overlayctl.actions.init import init_phases
from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.etcd.v2_import import ImportPlan
from overlayctl.inventory.model import Inventory
from overlayctl.phases.adopt_import import DropV2, ImportV2
from overlayctl.phases.adopt_outage import OutageProbes, OutageReport, ProbeStart
from overlayctl.phases.adopt_peers import PeerTls, file_value
from overlayctl.phases.adopt_takeover import TakeOver, host_plan, interim, read_state
from overlayctl.phases.base import (
    HostPhase,
    OnHost,
    Phase,
    Rollout,
    RolloutOptions,
    RolloutReport,
    Target,
)
from overlayctl.phases.connect import Connect
from overlayctl.phases.engine import run_phases, timed
from overlayctl.phases.etcd_auth import AllowList
from overlayctl.phases.facts import Gather
from overlayctl.phases.packages import Packages
from overlayctl.phases.pki import PushPki
from overlayctl.phases.prepare import Prepare
from overlayctl.remote.session import Session

TITLE = "adopt"


@dataclass
class AdoptOptions(RolloutOptions):
    drop_stale: bool = False  # leases of no inventory host are left out of the import


@dataclass
class AdoptPlan:
    """What adopt will do, decided before anything changes (`plan`, the question, -o json)."""

    peers: list[str] = field(default_factory=list)
    imports: ImportPlan | None = None
    takeovers: dict[str, list[str]] = field(default_factory=dict)  # host -> steps left
    notes: list[str] = field(default_factory=list)  # what follows the takeover

    def lines(self) -> list[str]:
        out = [f"etcd: {line}" for line in self.peers]
        if self.imports is None:
            out.append("v2: the v2 API is off: nothing to import")
        else:
            out += [f"v2 -> v3: {line}" for line in self.imports.lines]
        for host, steps in self.takeovers.items():
            out += [f"{host}: {step}" for step in steps] or [f"{host}: taken over already"]
        return out + [f"then: {note}" for note in self.notes]

    def doc(self) -> dict:
        return {
            "peers": self.peers,
            "import": self.imports.to_json() if self.imports else None,
            "takeover": self.takeovers,
            "notes": self.notes,
        }


def reach(rollout: Rollout) -> Inventory:
    """The inventory as etcd's clients see it now: plain http until init's Etcd phase took them
    to TLS (read from the URL the first member serves), the inventory's own after."""
    found = getattr(rollout, "handbuilt", None)
    url = found.etcd.client_url if found is not None else ""
    return rollout.inv if url.startswith("https://") else interim(rollout.inv)


def peer_lines(rollout: Rollout) -> list[str]:
    """etcd's members and whether their peers still have to move to TLS."""
    found = getattr(rollout, "handbuilt", None)
    members = found.etcd.members if found is not None else None
    if not rollout.inv.cluster.tls:
        return ["cluster.tls is off: peer URLs stay as they are"]
    if not members:
        return ["members not read (no etcd answered): nothing can be planned for them"]
    lines = [f"member {m.name} ({m.id}): peers {', '.join(m.peer_urls)}" for m in members]
    plain = [m for m in members if any(u.startswith("http://") for u in m.peer_urls)]
    if not plain:
        return [*lines, "every peer URL is https already"]
    lines.append(
        f"{len(plain)} peer URLs to https, member by member: each listens on both schemes "
        "while `member update` moves its URL (IDs and data kept)"
    )
    if len(members) < 3:
        lines.append(
            f"{len(members)} members: each member's restart is a few seconds without quorum"
        )
    return lines


MIN_ETCD = (3, 4)  # the agent speaks etcd's /v3/ JSON gateway; 3.3 serves it as /v3beta/


def too_old(version: str) -> bool:
    """Whether etcd VERSION (`3.3.11`) is older than MIN_ETCD; an unreadable one is not."""
    parts = version.split(".")[:2]
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return False
    return (int(parts[0]), int(parts[1])) < MIN_ETCD


def refuse_old_etcd(rollout: Rollout) -> None:
    """CentOS 7's etcd 3.3 (the runbook's `yum install etcd`) cannot carry our agents: refused
    before anything changes, naming the way forward."""
    found = getattr(rollout, "handbuilt", None)
    if found is not None and too_old(found.etcd.version):
        raise Conflict(
            f"{found.via}: etcd {found.etcd.version} runs there; adopt needs etcd "
            f"{'.'.join(map(str, MIN_ETCD))} or newer on every member: upgrade etcd member by "
            "member first (docs/runbooks/adopt.md, 'Before you start')"
        )


def flanneld_off_node(rollout: Rollout) -> list[str]:
    """flanneld on a host the inventory gives no node role: adopt takes over node hosts only, and
    would then wait for that flanneld forever before it drops the v2 keys."""
    found = getattr(rollout, "handbuilt", None)
    hosts = found.hosts if found is not None else {}
    return [
        f"{h.name}: flanneld runs here, but the inventory does not make {h.name} a node host "
        "(roles: [etcd, node]): add the role, or stop and disable flanneld there, then re-run"
        for h in rollout.inv.hosts
        if not h.is_node
        and h.name in hosts
        and (hosts[h.name].flanneld.running or hosts[h.name].flanneld.enabled)
    ]


def etcd_refusals(rollout: Rollout) -> list[str]:
    """What the peer move would trip over, found before it starts: a member whose name or
    address is no inventory etcd host (a member's name never changes, and our etcd.conf names it
    after the host), and member data outside `/var/lib/etcd/<name>.etcd` (our etcd.conf points
    there: the member would restart on an empty folder and never rejoin)."""
    found = getattr(rollout, "handbuilt", None)
    by_address = {str(h.address): h.name for h in rollout.inv.etcd_members}
    out = []
    for member in (found.etcd.members or ()) if found is not None else ():
        hosts = {urlsplit(u).hostname for u in member.peer_urls}
        name = next((by_address[h] for h in hosts if h in by_address), None)
        if name is None:
            out.append(f"etcd member {member.name} ({member.id}, peers "
                       f"{', '.join(member.peer_urls)}) is no etcd host of the inventory: add "
                       "its host (roles: [etcd]) or remove the member first")  # fmt: skip
        elif name != member.name:
            out.append(f"{name}: etcd calls this member {member.name!r}: name the host "
                       f"{member.name} in the inventory (members keep their names)")  # fmt: skip
    for target in rollout.live(lambda h: h.is_etcd):
        want, dirs = hp.etcd_data_dir(target.name), target.facts.etcd_data_dirs
        change = next((f for f in target.plan.files if f.path == hp.ETCD_CONF), None)
        conf = file_value(change.current.content, "ETCD_DATA_DIR") if change else None
        have = [conf.rstrip("/")] if conf and conf.rstrip("/") != want else sorted(dirs)
        if want not in dirs and have:
            out.append(f"{target.name}: etcd's data is in {', '.join(have)}, not in {want} "
                       "where overlayctl's etcd.conf keeps it: stop etcd there, move the "
                       "folder, point ETCD_DATA_DIR at it, start etcd, then re-run")  # fmt: skip
    return out


@dataclass
class Preflight:
    """Reads and decides, changes nothing: the import's plan (refusals raise here) and every
    node host's takeover steps (a host whose takeover would be refused stops the run before
    anything changes anywhere)."""

    importer: ImportV2
    plan: AdoptPlan = field(default_factory=AdoptPlan)
    title: str = TITLE

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        refuse_old_etcd(rollout)
        refused = etcd_refusals(rollout) + flanneld_off_node(rollout)
        if refused:
            raise Conflict(refused[0] + (f" (and {len(refused) - 1} more)" if refused[1:] else ""))
        self.plan.peers = peer_lines(rollout)
        self.importer.via = reach(rollout)
        self.plan.imports = self.importer.preview(rollout)
        subnets = _subnets(self.plan.imports, rollout.inv.cluster.etcd_prefix)
        nodes = [t for t in rollout.live() if t.host.is_node]

        def look(target: Target) -> tuple[list[str], list[str]]:
            """(the host's steps left, why its takeover would be refused)."""
            on = OnHost(rollout, rollout.remote(target), target)
            address = str(target.host.address)
            steps = host_plan(on, read_state(on.remote), lambda: subnets.get(address))
            if steps is None:  # no flanneld here: init's phases do this host
                return [], []
            return steps.steps(), [f"{target.name}: {why}" for why in steps.refusals]

        hosts = [t.host for t in nodes]
        looked = rollout.session.each(self.title, lambda h, _r: look(rollout.targets[h.name]),
                                      hosts)  # fmt: skip
        refused = [why for _steps, whys in looked.succeeded.values() for why in whys]
        if refused:
            raise Conflict("; ".join(refused))
        if looked.failed:  # a host that could not be read (SSH): its own error, not a refusal
            failure = next(iter(looked.failed.values()))
            raise OverlayctlError(f"{failure.host}: {failure.error}")
        self.plan.takeovers = {t.name: looked.succeeded[t.name][0] for t in nodes}
        if rollout.options.force:
            self.plan.notes.append(
                "--force: where the network config differs from the inventory's after the "
                "takeover (a backend change), init's phases replace it: agents restart one host "
                "at a time, then docker for the new MTU, one host at a time; hosts on different "
                "backends cannot talk until both are switched"
            )


def _subnets(imports: ImportPlan | None, prefix: str) -> dict[str, str]:
    """PublicIP -> the subnet its lease will hold in v3 (`<prefix>/subnets/a.b.c.d-len`)."""
    if imports is None:
        return {}
    found = {}
    for key, public_ip in imports.want:
        name = key.removeprefix(prefix.rstrip("/") + "/subnets/")
        found[public_ip] = name.replace("-", "/")
    return found


def change_phases(
    options: AdoptOptions, importer: ImportV2, probes: OutageProbes
) -> list[Phase | HostPhase]:
    """The hand-over, then init's phases from a fresh look (its own Connect excepted)."""
    drop = DropV2(force=options.force, drop_stale=options.drop_stale, via=importer.via)
    return [
        ProbeStart(probes),
        Prepare(),
        Packages(),
        PushPki(),
        PeerTls(),
        importer,
        AllowList(via=importer.via),
        TakeOver(),
        drop,
        *init_phases(options)[1:],  # --force: the backend switch follows (design 3.4)
        OutageReport(probes),
    ]


def preview(rollout: Rollout) -> tuple[AdoptPlan, str]:
    """adopt's plan for `plan` on a cluster built by hand, after its facts: (the plan as far as
    it got, the refusal adopt would stop on or ""). Reads only, like Preflight itself."""
    preflight = Preflight(ImportV2(force=rollout.options.force))
    try:
        preflight.run(rollout)
    except OverlayctlError as exc:
        return preflight.plan, str(exc)
    return preflight.plan, ""


@dataclass
class Adoption:
    """One adopt run as far as it got: its plan and the outages measured."""

    plan: AdoptPlan = field(default_factory=AdoptPlan)
    probes: OutageProbes = field(default_factory=OutageProbes)

    def doc(self) -> dict:
        outages = [dataclasses.asdict(o) for o in self.probes.outages]
        return {**self.plan.doc(), "outages": outages}


def run_adopt(
    session: Session,
    options: AdoptOptions,
    report: RolloutReport,
    adoption: Adoption,
    confirm: Callable[[AdoptPlan], None] | None = None,
) -> None:
    """Read and decide; CONFIRM(plan) (raises to stop: nothing changed yet); then adopt.
    REPORT and ADOPTION are filled as it goes (they still tell when a phase raises)."""
    rollout = Rollout(session, options, report)
    importer = ImportV2(force=options.force, drop_stale=options.drop_stale)
    preflight = Preflight(importer, adoption.plan)
    with timed(report):
        # The PKI in memory until the answer: a refusal or a "no" leaves no PKI in the state
        # folder (only the run's log and the agent's wheel cache); the second look makes and
        # writes it, as init's would.
        run_phases(rollout, [Connect(), Gather(refuse_change=False, write=False), preflight])
        if confirm is not None:
            confirm(adoption.plan)
        try:
            written = Gather(refuse_change=False)
            run_phases(rollout, [written, *change_phases(options, importer, adoption.probes)])
        finally:
            adoption.probes.stop(rollout)  # none left behind by a failed run (else: no-op)
