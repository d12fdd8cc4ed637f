"""facts: what each host is like, in one round trip per host: its facts (OS family, package
manager, Python, interfaces, packages, unit states), every file it may be given, the CA it
trusts and, on the first etcd member, the network config in etcd and the etcd running there as
it runs (its members' peer URLs, flanneld's v2 keys). From those, before any phase changes
anything: a cluster built by hand (refused: `overlayctl adopt` takes it over; plan/handbuilt.py),
the network config change (refused without --force), the CA check, the PKI, and each host's
plan (planner.plan_host). The hosts found keep their detected OS family in the
rollout's targets; the inventory is never rewritten.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlayctl import paths as hp
from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.etcd import netconfig, v2_remote
from overlayctl.etcd.v2 import parse_dump
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.base import Rollout, Target
from overlayctl.phases.packages import both_families
from overlayctl.phases.pki import ensure_pki
from overlayctl.phases.planner import plan_host
from overlayctl.plan import handbuilt
from overlayctl.plan.config_change import add_config_change, config_change, refuse_fixed_changes
from overlayctl.plan.facts import Facts, RemoteFile, checked, parse_facts, parse_files, resolve_host
from overlayctl.plan.files import candidate_paths, desired_files
from overlayctl.plan.handbuilt import EtcdFound, HandBuilt, HostHandBuilt, OldLease, V2Found
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import (
    READ_FILES,
    Command,
    Remote,
    RemoteCommandFailed,
    RunResult,
    command_of,
)
from overlayctl.wheelhouse import Bundles

FACTS = HostScript("facts.sh")
ETCD_FOUND = HostScript("etcd-found.sh")


@dataclass(frozen=True)
class Found:
    """One host as its facts round trip found it."""

    host: Host  # with its OS family
    facts: Facts
    files: dict[str, RemoteFile]
    handbuilt: HostHandBuilt
    config: dict[str, Any] | None = None  # the network config in etcd (first member only)
    etcd: EtcdFound | None = None  # etcd as it runs there (the member it is read through)


@dataclass
class Gather:
    """READ_CONFIG: read the network config in etcd with the first member's facts (init, plan).
    REFUSE_CHANGE: a different config without --force ends the run here (init; `plan` shows
    it; a cluster built by hand too). WRITE False (`plan`): the PKI is made in memory only, the
    agent's wheel in WHEELS_DIR.
    JOINING: etcd members being added to a live cluster -> the members they join with."""

    read_config: bool = True
    refuse_change: bool = True
    write: bool = True
    wheels_dir: Path | None = None
    joining: dict[str, tuple[Host, ...]] = field(default_factory=dict)
    title: str = "facts"

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        session, inv = rollout.session, rollout.inv
        member = next((m for m in inv.etcd_members if m.name in session.remotes), None)
        ask = member.name if member is not None and self.read_config else None
        # etcd as it runs is read through the first member already in the cluster (join: not
        # one of those joining it)
        via = next((m.name for m in inv.etcd_members
                    if m.name in session.remotes and m.name not in self.joining), "")  # fmt: skip
        found = session.each(
            "facts", lambda h, r: look(r, rollout, h, h.name == ask, h.name == via)
        ).succeeded
        rollout.known_config = found[ask].config if ask in found else None
        rollout.handbuilt = cluster_record(inv, found, via)
        if self.read_config:
            rollout.change = config_change(rollout.known_config, inv)
        refusal = rollout.handbuilt.refusal()
        if refusal and self.refuse_change:  # init on a hand-built cluster broke etcd (#21)
            raise Conflict(refusal)
        if self.refuse_change:  # before anything is made or changed, here or on the hosts
            refuse_fixed_changes(rollout.change, {}, inv)
            if rollout.change is not None and not rollout.options.force:
                raise Conflict(f"{rollout.change.describe()}. Re-run with --force to do it")
        bundles = Bundles(self.wheels_dir or state_dir(inv) / "wheels", inv.cluster.agent_options)
        # Every node host's wheels checked against the lock here, out of the per-host loop: a
        # wheel that does not match ends the whole run before the PKI is made or any host changed.
        bundles.check(
            {n: (f.facts.python, f.facts.arch) for n, f in found.items() if f.host.is_node}
        )
        cas = {name: f.files[hp.CA_CERT].content for name, f in found.items()}
        rollout.pki = ensure_pki(inv, session.reporter, cas, write=self.write,
                                 renew_leaves=rollout.options.renew_certificates,
                                 new_ca=rollout.options.new_ca)  # fmt: skip
        made = session.each(
            "facts", lambda h, _r: self._target(rollout, found[h.name], bundles),
            [h for h in session.alive if h.name in found],
        )  # fmt: skip
        rollout.targets = made.succeeded
        plans = {name: t.plan for name, t in made.succeeded.items()}
        rollout.report.plans = plans
        # Network and the subnet length (and cluster.tls, the etcd prefix) never change here;
        # on a cluster built by hand (`plan` only gets here) adopt is the answer to all three.
        if not refusal:
            refuse_fixed_changes(None if self.refuse_change else rollout.change, plans, inv)
        if rollout.change is not None:
            add_config_change(plans, inv, rollout.change)
        rollout.report.changes = dict.fromkeys(plans, 0)

    def _target(self, rollout: Rollout, found: Found, bundles: Bundles) -> Target:
        host, facts, inv = found.host, found.facts, rollout.inv
        desired = desired_files(inv, host, rollout.pki, self.joining.get(host.name))
        current = {path: found.files[path] for path in desired}
        bundle = bundles.get(facts.python, facts.arch) if host.is_node else None
        plan = plan_host(
            host, facts.os_family or "debian", desired, current, facts,
            restart_network=rollout.options.restart_network,
            agent_digest=bundle.digest if bundle else None, docker_mode=inv.cluster.docker_mode,
        )  # fmt: skip
        return Target(host, facts, plan, bundle)


def look(remote: Remote, rollout: Rollout, host: Host, with_config: bool, with_etcd: bool) -> Found:
    """HOST's facts, its files, (WITH_CONFIG) the network config in etcd and (WITH_ETCD) etcd
    as it runs there: one round trip."""
    inv = rollout.inv
    paths = sorted({*candidate_paths(inv, host), *handbuilt.FILES})
    commands: list[Command] = [
        command_of(
            FACTS,
            hp.AGENT_DIGEST,
            hp.DOCKER_DROPIN,
            hp.AGENT_STARTED_DIGEST,
            str(inv.cluster.network),
            *both_families(host),
        ),
        command_of(READ_FILES, *paths),
    ]
    if with_config:
        commands.append(netconfig.read_command(inv))
    if with_etcd:
        commands.append(etcd_found_command(inv, host))
    results = remote.batch(commands, waiting_for="the host's facts")
    text = _ok(host, commands[0], results[0]).stdout
    facts = checked(host.name, parse_facts(text))
    files = parse_files(_ok(host, commands[1], results[1]).stdout, paths)
    config = netconfig.parse_current(results[2]) if with_config else None
    etcd = _etcd_found(results[-1]) if with_etcd else None
    record = handbuilt.parse_host(text, facts, files)
    return Found(resolve_host(inv, host, facts), facts, files, record, config, etcd)


def cluster_record(inv: Inventory, found: dict[str, Found], via: str) -> HandBuilt:
    """What every host and the etcd read through VIA show of a cluster built by hand."""
    etcd = found[via].etcd if via in found else None
    return HandBuilt(
        # in inventory order (the hosts answered in any order): the refusal names the first
        hosts={h.name: found[h.name].handbuilt for h in inv.hosts if h.name in found},
        etcd=etcd or EtcdFound(),
        v2=v2_found(etcd, via, inv.cluster.etcd_prefix),
        via=via if etcd is not None else "",
        via_address=str(inv.host(via).address) if etcd is not None else "",
    )


def etcd_found_command(inv: Inventory, member: Host) -> Command:
    """etcd as it runs on MEMBER: etcd-found.sh with the admin identity (for an https etcd) and
    etcd/v2_remote.py's v2 dump through plain http, which it runs only where v2 is on (clients
    are plain http wherever v2 is: the runbook's, and adopt's stages before the last)."""
    plain = dataclasses.replace(inv, cluster=dataclasses.replace(inv.cluster, tls=False))
    local = [
        f"http://127.0.0.1:{hp.ETCD_CLIENT_PORT}",
        f"http://{member.address}:{hp.ETCD_CLIENT_PORT}",
    ]
    dump, dump_label = v2_remote.dump_command(plain, local)
    argv = ETCD_FOUND.argv(hp.CA_CERT, hp.ETCD_ADMIN_CERT, hp.ETCD_ADMIN_KEY, *dump)
    return argv, f"sh -c <{ETCD_FOUND.label}> (then {dump_label})"


def v2_found(etcd: EtcdFound | None, via: str, prefix: str) -> V2Found:
    """flanneld's v2 keys under PREFIX from etcd's answer (overlayctl/etcd/v2.py reads it)."""
    if etcd is None or etcd.v2_exit is None:
        return V2Found()  # no etcd there, or v2 off
    try:
        read = v2_remote.parse_read(RunResult(etcd.v2_exit, etcd.v2_text, etcd.v2_text), via)
        v2 = parse_dump(read.text, prefix) if read.state != "off" else None
    except OverlayctlError as exc:  # V2DumpError too
        return V2Found(error=str(exc))
    if v2 is None:
        return V2Found()
    leases = tuple(OldLease(str(x.subnet), str(x.public_ip), x.ttl) for x in v2.leases)
    keys = sum(not node.dir for node in v2.nodes)
    return V2Found(keys, v2.config_key, v2.config_raw, leases)


def _etcd_found(result: RunResult) -> EtcdFound:
    if result.code != 0:  # never fatal: what it reads only informs the decision
        why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.code}"]
        return EtcdFound(members_error=f"etcd-found.sh failed: {why[0][:300]}")
    return handbuilt.parse_etcd(result.stdout)


def _ok(host: Host, command: Command, result: RunResult) -> RunResult:
    if result.code != 0:
        raise RemoteCommandFailed(host.name, command[1], result.code, result.stderr)
    return result
