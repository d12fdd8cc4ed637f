"""etcd: the env-style /etc/etcd/etcd.conf (the seed's format, TLS by default) and a systemd
drop-in so the distro's unit reads it; restarts keep quorum (a new cluster starts all at once, a
running one member by member, each healthy before the next). Then the network config is written
into etcd (NetworkConfig); for `join`, new members are added one at a time (members.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster, members, netconfig
from overlayctl.inventory.endpoints import client_url, peer_url
from overlayctl.inventory.model import Host, Inventory
from overlayctl.inventory.network import network_config
from overlayctl.phases.base import (
    HostPhase,
    OnHost,
    PlanInput,
    Probe,
    Restart,
    Rolling,
    Rollout,
    Target,
)
from overlayctl.plan.changes import Action, DesiredFile, service_actions
from overlayctl.plan.facts import Facts, RemoteFile
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote, RemoteCommandFailed, command_of

_PATHS = (hp.ETCD_CONF, hp.ETCD_DROPIN)
PEER_SERVING = HostScript("etcd_peer_serving.py")
PEER_SERVING_S = 10  # a new member's start until it serves its peers, at most
_PKI = {f.path for f in hp.PKI_FILES if f.etcd_only} | {hp.CA_CERT}  # what etcd reads at start
_CLIENT_SCHEME = re.compile(rb'^ETCD_LISTEN_CLIENT_URLS="?(https?)://', re.M)


def anchor(rollout: Rollout, inv: Inventory | None = None) -> Remote:
    """The member etcd is reached through: INV's first (the inventory's, by default)."""
    first = (inv or rollout.inv).etcd_members[0]
    remote = rollout.session.remotes.get(first.name)
    if remote is None:
        raise OverlayctlError(f"etcd member {first.name} is not reachable")
    return remote


@dataclass
class Etcd(HostPhase):
    """ROLLING: KEEP_QUORUM (init), or SEPARATELY (join: members are added by AddMembers, and
    running ones are not restarted)."""

    name: ClassVar[str] = "etcd"
    unit: ClassVar[str] = "etcd"
    rolling: Rolling = Rolling.KEEP_QUORUM
    restarted: set[str] = field(default_factory=set)  # members restarted in this run

    @property
    def restart(self) -> Restart:  # type: ignore[override]
        return Restart(self.unit, self.rolling)

    def runs_on(self, host: Host) -> bool:
        return host.is_etcd

    def owns(self, path: str) -> bool:
        return path in _PATHS

    def same(
        self, host: Host, path: str, have: RemoteFile, want: DesiredFile, facts: Facts
    ) -> bool:
        """Equal, or (etcd.conf of a member whose data dir exists) equal but for ETCD_INITIAL_*.

        etcd reads ETCD_INITIAL_* only when it bootstraps an empty data dir. A member that
        joined a live cluster keeps the initial cluster it joined with; rewriting those lines
        later would change nothing in etcd but would make every re-run report a change. Before
        the member has data, those lines are exactly what matters, so then they must match.
        """
        if have.content == want.content:
            return True
        if path != hp.ETCD_CONF or have.content is None:
            return False
        if hp.etcd_data_dir(host.name) not in facts.etcd_data_dirs:
            return False
        return _without_initial(have.content) == _without_initial(want.content)

    def actions(self, inp: PlanInput) -> list[Action]:
        if not inp.host.is_etcd:
            return []
        return service_actions(
            self.name, self.unit, inp.facts, reload=hp.ETCD_DROPIN in inp.changed,
            restart=bool(inp.changed & (set(_PATHS) | _PKI)), fresh="etcd" in inp.installing,
        )  # fmt: skip

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        """Together: return at once (members wait for each other to reach quorum)."""
        restart_etcd(on.remote, wait=not together)
        self.restarted.add(on.target.name)

    def start_new(
        self, rollout: Rollout, targets: list[Target], probes: dict[str, Probe]
    ) -> list[str]:
        """A new cluster's members one after another, each once the one before serves its
        peers (etcd_peer_serving.py says why: started at once, each waited 2 s). A member
        that does not serve within PEER_SERVING_S does not stop the others; the health wait
        that follows names it."""
        started: list[str] = []
        for target in targets:

            def start(host: Host, remote: Remote) -> None:
                late = start_member(rollout.inv, host, remote)
                self.restarted.add(host.name)
                if late:
                    rollout.say(host.name, self.name, f"not serving its peers yet: {late}")

            started += rollout.session.each(self.name, start, [target.host]).succeeded
        return started

    def healthy(self, rollout: Rollout) -> float:
        return cluster.wait_healthy(anchor(rollout), rollout.inv, rollout.options.etcd_timeout,
                                    endpoints=self.endpoints(rollout))  # fmt: skip

    def endpoints(self, rollout: Rollout) -> dict[str, str]:
        """Each member's client URL at the scheme it serves now: one not restarted yet in this
        run still serves its old etcd.conf's (adopt's last round turns clients from http to
        https one member at a time; asked at https, it would never answer)."""
        urls = {}
        for host in rollout.inv.etcd_members:
            url, target = client_url(rollout.inv, host), rollout.targets.get(host.name)
            old = next((f.current.content for f in target.plan.files
                        if f.path == hp.ETCD_CONF), None) if target else None  # fmt: skip
            found = _CLIENT_SCHEME.search(old or b"") if host.name not in self.restarted else None
            if found:
                url = f"{found.group(1).decode()}://{host.address}:{hp.ETCD_CLIENT_PORT}"
            urls[host.name] = url
        return urls

    def admit(self, rollout: Rollout, targets: list[Target]) -> None:
        members.require(anchor(rollout), rollout.inv, [t.host for t in targets])


def start_member(inv: Inventory, host: Host, remote: Remote) -> str:
    """Start a new cluster's member without waiting for quorum, then wait (bounded) until it
    serves its peers; one round trip. Returns why it does not serve yet ("": it does): the
    health wait that follows decides (a member without python3, an etcd-only host, cannot be
    asked, and the next one starts at once)."""
    pki = [hp.CA_CERT, hp.ETCD_PEER_CERT, hp.ETCD_PEER_KEY] if inv.cluster.tls else []
    start = ["systemctl", "restart", "--no-block", "etcd"]
    began, serving = remote.batch(
        [(start, shlex.join(start)),
         command_of(PEER_SERVING, peer_url(inv, host), str(PEER_SERVING_S), *pki)],
        timeout=PEER_SERVING_S + 60, waiting_for="etcd to serve its peers", stop_at_failure=True,
    )  # fmt: skip
    if began.code != 0:
        why = cluster.last_line(began.stderr)
        raise OverlayctlError(f"{host.name}: starting etcd failed: {why}")
    if serving.code == 0:
        return ""
    return cluster.last_line(serving.stdout or serving.stderr) or f"exit {serving.code}"


def restart_etcd(remote: Remote, wait: bool) -> None:
    """(Re)start etcd; without WAIT, return at once."""
    argv = ["systemctl", "restart"] + ([] if wait else ["--no-block"]) + ["etcd"]
    try:
        remote.run(argv, timeout=120, waiting_for="etcd to start")
    except RemoteCommandFailed as exc:
        raise OverlayctlError(f"{remote.target.name}: starting etcd failed: {exc}") from None


def wipe(remote: Remote, member: str) -> None:
    """reset: etcd stopped and disabled on MEMBER, its data gone (after it left the cluster)."""
    remote.run(["systemctl", "disable", "--now", "etcd"], check=False, waiting_for="etcd to stop")
    remote.run(["rm", "-rf", hp.etcd_data_dir(member)])


def _without_initial(content: bytes) -> list[bytes]:
    return [line for line in content.splitlines() if not line.startswith(b"ETCD_INITIAL_")]


@dataclass
class NetworkConfig:
    """The network config JSON at <etcd_prefix>/config, written only if absent (FORCE: replaced
    when it differs). Skipped while an etcd member is out of the run, as etcd's restarts are."""

    force: bool = False
    via: Inventory | None = None  # whose first member to write through (join: the running one)
    quiet: bool = False  # join: no line of its own
    title: str = "config"

    def should_run(self, rollout: Rollout) -> bool:
        members = (self.via or rollout.inv).etcd_members
        return all(m.name in rollout.session.remotes for m in members)

    def run(self, rollout: Rollout) -> None:
        inv = rollout.inv
        if rollout.known_config is not None and rollout.known_config == network_config(inv):
            result = "unchanged"  # read with the facts; nothing in this run writes it
        else:
            result = netconfig.ensure(anchor(rollout, self.via), inv, self.force)
        rollout.report.network_config = result
        if not self.quiet:
            rollout.say("cluster", self.title, f"{result}: {inv.cluster.etcd_prefix}/config")
