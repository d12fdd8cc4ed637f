"""takeover (adopt, node hosts, one at a time): flanneld replaced by the agent on the SAME
subnet, and docker's options taken over, without stopping a container that need not stop
(docs/design/adopt.md 3.3).

On each host, in one turn of its own (Rolling.ONE_BY_ONE: while one host's overlay is down for
a few seconds, every other host's keeps running): H's v2 lease refreshed to 24 h (flanneld
elsewhere keeps routing to H); docker's hand edits out of the way and our drop-in in, flanneld
disabled and masked, one daemon-reload, then docker must no longer be bound to flanneld and
our ExecStart must win (else everything is put back and the host is refused); the agent
installed with an interim env (etcd's clients are still plain http, with no identity: the final
Agent phase writes init's); flanneld stopped, flannel's leftover devices removed, the agent
started; /readyz and its lease must be the imported subnet, else the agent goes and flanneld
comes back as it was (the roll then stops: the engine names the hosts not reached). Last,
dockerd restarts only if the flags it runs with differ from the agent's; in the runbook's case
they are equal and every container keeps running.

Every step is read from the host (plan/takeover.py): a run cut anywhere leaves a state the next
one finishes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd.imported import Imported, read_imported, refresh_v2_lease
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.agent import install_agent, restart_agent
from overlayctl.phases.base import HostPhase, OnHost, Probe, Restart, Rolling, Rollout, Target
from overlayctl.phases.docker import Docker, edit_execstart
from overlayctl.phases.etcd import anchor
from overlayctl.plan.docker_takeover import (
    Ours,
    decide,
    effective_problems,
    ours_from_dropin,
    parse_show,
)
from overlayctl.plan.render import render_host
from overlayctl.plan.takeover import HostState, TakeoverPlan, leftover_devices, parse_state
from overlayctl.plan.takeover import plan_takeover as plan_host_takeover
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote, batch_checked

STATE = HostScript("takeover-state.sh")
FILES = HostScript("takeover-files.sh")
FLANNELD = "flanneld.service"
# Where a hand-written flanneld unit lives: moved to the backups, else `mask` cannot link there.
LOCAL_UNITS = "/etc/systemd/system/"
CONTAINERD = "--containerd=/run/containerd/containerd.sock"


def interim(inv: Inventory) -> Inventory:
    """INV as etcd's clients see it during adoption: plain http, no identity."""
    return dataclasses.replace(inv, cluster=dataclasses.replace(inv.cluster, tls=False))


@dataclass(frozen=True)
class TakeoverProbe(Probe):
    """A host's state and what is left there (restart: a turn of its own is needed)."""

    state: HostState = field(default_factory=HostState)
    plan: TakeoverPlan = field(default_factory=TakeoverPlan)
    expected: str = ""  # the imported subnet
    key: str = ""  # its key (the same path in v2 and v3)


@dataclass
class TakeOver(HostPhase):
    name: ClassVar[str] = "takeover"
    restart = Restart("overlay-agent", Rolling.ONE_BY_ONE)
    probe_hosts: ClassVar[bool] = True
    # The v3 leases, read once for the run, by the first probe that needs them.
    _imported: Imported | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def runs_on(self, host: Host) -> bool:
        return host.is_node

    def running(self, target: Target) -> bool:
        """flanneld or the agent carries the host's traffic: one host at a time."""
        return True

    def imported(self, rollout: Rollout) -> Imported:
        with self._lock:
            if self._imported is None:
                inv = interim(rollout.inv)
                self._imported = read_imported(anchor(rollout, inv), inv)
            return self._imported

    def probe(self, on: OnHost) -> Probe:
        """The host's state (one round trip) and the steps left; a host whose takeover would be
        refused (a drop-in to decide by hand, no imported lease) is refused before anything
        changes there."""
        state = read_state(on.remote)
        lease = None

        def imported() -> str | None:  # etcd is read only when needed, once for the run
            nonlocal lease
            lease = self.imported(on.rollout).leases.get(str(on.target.host.address))
            return lease.subnet if lease else None

        plan = host_plan(on, state, imported)
        if plan is None:
            return TakeoverProbe(restart=False, state=state)
        if plan.refusals:
            raise OverlayctlError(f"{on.target.name}: " + "; ".join(plan.refusals))
        expected = lease.subnet if lease else state.subnet
        return TakeoverProbe(restart=bool(plan.steps()), state=state, plan=plan,
                             expected=expected, key=lease.key if lease else "")  # fmt: skip

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        if not isinstance(probe, TakeoverProbe):
            raise OverlayctlError(f"{on.target.name}: takeover without a look at the host")
        for line in probe.plan.steps():
            say(on, "to do: " + line)
        plan, mine = probe.plan, ours(on)
        inv = interim(on.inv)
        if probe.key and (plan.flanneld_off or plan.start_agent):
            say(on, refresh_v2_lease(anchor(on.rollout, inv), inv, probe.key))
        docker_files = prepare_units(on, probe, mine)
        if plan.start_agent:
            start_agent(on, probe, self.imported(on.rollout).backend, docker_files)
        take_over_docker(on, probe, mine, docker_files)


def host_plan(
    on: OnHost, state: HostState, imported: Callable[[], str | None]
) -> TakeoverPlan | None:
    """What is left on the host with STATE (also adopt's plan, before the import ran): None
    where no flanneld is (init's phases do that host). IMPORTED gives the subnet the import
    holds for the host; it is asked only while flanneld may still run, as a settled host (flanneld
    masked and stopped, the agent ready) had its lease checked when the agent started, and its
    v2 lease may be gone."""
    if not state.flanneld.present:
        return None
    settled = state.flanneld.masked and not state.flanneld.running and state.agent_ready
    expected = state.subnet if settled else imported()
    return plan_host_takeover(state, expected, ours(on), str(on.target.host.address))


def say(on: OnHost, message: str) -> None:
    on.rollout.say(on.target.name, TakeOver.name, message)


def read_state(remote: Remote) -> HostState:
    out = remote.script(
        STATE,
        hp.DOCKER_OPTS_ENV,
        hp.SUBNET_ENV,
        str(hp.AGENT_HEALTHZ_PORT),
        timeout=60,
        waiting_for="flanneld's, the agent's and docker's state",
    )
    return parse_state(out.stdout)  # fmt: skip


def ours(on: OnHost) -> Ours:
    """What docker runs with once taken over: our drop-in (rendered as the final Docker phase
    renders it), or with `docker.mode: execstart` docker's own unit edited."""
    host, family = on.target.host, on.family
    if on.inv.cluster.docker_mode == "execstart":
        argv = (hp.DOCKERD[family], "-H", "fd://", CONTAINERD, "$DOCKER_NETWORK_OPTIONS")
        return Ours("", None, hp.DOCKER_OPTS_ENV, argv)
    text = render_host(interim(on.inv), host)[hp.DOCKER_DROPIN].content.decode()
    return ours_from_dropin(hp.DOCKER_DROPIN, text, hp.DOCKER_OPTS_ENV)


def files(remote: Remote, mode: str, paths: list[str]) -> None:
    if paths:
        remote.script(FILES, mode, remote.backup_root, *paths)


def systemd(remote: Remote, *argvs: list[str]) -> list[str]:
    """ARGVS in one round trip; each must succeed. Returns their outputs."""
    commands = [(argv, " ".join(argv)) for argv in argvs]
    return [r.stdout for r in batch_checked(remote, commands, waiting_for="systemd")]


def prepare_units(on: OnHost, probe: TakeoverProbe, mine: Ours) -> list[str]:
    """docker's hand edits out of the way and our drop-in in, flanneld disabled and masked, one
    daemon-reload; then docker must not be bound to flanneld and our ExecStart must win, else
    all of it is put back. Returns docker's files changed (what a rollback restores)."""
    remote, plan, state = on.remote, probe.plan, probe.state
    decision = plan.docker
    changed: list[str] = []
    if decision is not None and mine.dropin_text is not None:
        put = [(mine.dropin, mine.dropin_text.encode(), 0o644, "root:root")]
        if decision.strip:
            put.append((decision.strip, decision.stripped.encode(), 0o644, "root:root"))
        if plan.write_dropin or decision.strip:
            remote.put_files(put)
            changed += [p for p, *_ in put]
    if decision is not None and decision.remove:
        files(remote, "stash", list(decision.remove))
        changed += decision.remove
    masking = plan.flanneld_off
    if masking:
        systemd(remote, ["systemctl", "disable", "--no-reload", FLANNELD])
        if state.flanneld.fragment.startswith(LOCAL_UNITS):
            files(remote, "stash", [state.flanneld.fragment])
    show = systemd(remote, *([["systemctl", "mask", "--no-reload", FLANNELD]] if masking else []),
                   ["systemctl", "daemon-reload"],
                   ["systemctl", "show", "docker.service", "-p", "DropInPaths", "-p", "ExecStart",
                    "-p", "EnvironmentFiles", "-p", "Requires", "-p", "BindsTo", "-p", "PartOf",
                    "-p", "FragmentPath"])[-1]  # fmt: skip
    unit = parse_show(show)
    problems = [f"stopping flanneld would stop docker (docker's {p}={FLANNELD})"
                for p in unit.binds()]  # fmt: skip
    if mine.dropin_text is not None:
        problems += effective_problems(unit, mine, state.want)
    if problems:
        put_back(on, probe, changed, agent=False)
        raise OverlayctlError(f"{on.target.name}: docker's units not taken over, all put back: "
                              + "; ".join(problems))  # fmt: skip
    if changed or masking:
        say(on, f"flanneld {'masked, ' if masking else ''}docker's units ours "
                   f"({len(changed)} files changed)")  # fmt: skip
    return changed


def start_agent(on: OnHost, probe: TakeoverProbe, backend: str, docker_files: list[str]) -> None:
    """The agent installed with its interim env, flanneld stopped, leftovers removed, the agent
    started; it must be ready on the imported lease, else flanneld comes back."""
    remote, target = on.remote, on.target
    if target.bundle is None:
        raise OverlayctlError(f"{target.name}: no agent wheelhouse for this host")
    if target.facts.agent_digest != target.bundle.digest:
        install_agent(remote, target.bundle)
    rendered = render_host(interim(on.inv), target.host)
    paths = [hp.AGENT_UNIT, hp.AGENT_ENV[on.family]]
    remote.put_files([(p, rendered[p].content, rendered[p].mode, f"{rendered[p].owner}:"
                       f"{rendered[p].owner}") for p in paths])  # fmt: skip
    systemd(remote, ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--no-reload", "overlay-agent"])  # fmt: skip
    try:
        remote.run(["systemctl", "stop", FLANNELD, "overlay-agent"], timeout=120,
                   waiting_for="flanneld to stop")  # fmt: skip
        delete, busy = leftover_devices(read_state(remote), backend)
        if busy:
            raise OverlayctlError(f"{', '.join(busy)} held by another process: the agent "
                                  "cannot open it")  # fmt: skip
        for device in delete:
            remote.run(["ip", "link", "delete", device], check=False)
        restart_agent(remote)
        now = read_state(remote)
        if now.subnet != probe.expected:
            raise OverlayctlError(f"the agent leased {now.subnet or 'nothing'}, not the imported "
                                  f"{probe.expected}")  # fmt: skip
    except OverlayctlError as exc:
        said = remote.run(["journalctl", "-u", "overlay-agent", "-n", "20", "-o", "cat",
                           "--no-pager"], check=False).stdout  # fmt: skip
        last = [ln for ln in said.splitlines() if "ERROR" in ln or "error" in ln][-1:]
        put_back(on, probe, docker_files, agent=True)
        raise OverlayctlError(f"{target.name}: takeover failed ({exc}"
                              + (f"; the agent said: {last[0][:200]}" if last else "")
                              + "); the agent was stopped and flanneld runs again as before"
                              ) from None  # fmt: skip
    say(on, f"overlay-agent ready on {probe.expected}" + (
        f" (removed {', '.join(delete)})" if delete else ""))  # fmt: skip


def put_back(on: OnHost, probe: TakeoverProbe, docker_files: list[str], *, agent: bool) -> None:
    """A rollback: docker's files changed restored, flanneld unmasked and enabled as it was.
    AGENT (it was started, flanneld stopped): also the agent stopped and disabled with its
    persistent flannel0 (else flanneld would come up as flannel1), the agent's env restored where
    flanneld reads it too (RHEL's /etc/sysconfig/flanneld), and flanneld started."""
    remote, state = on.remote, probe.state
    if agent:
        remote.run(["systemctl", "disable", "--now", "overlay-agent"], check=False, timeout=120)
        remote.run(["ip", "link", "delete", "flannel0"], check=False)
    env = hp.AGENT_ENV[on.family]
    restore = [*docker_files, *([env] if env in state.flanneld_env else [])]
    remote.run(["systemctl", "unmask", "--no-reload", FLANNELD], check=False)
    unit = state.flanneld.fragment or LOCAL_UNITS + FLANNELD
    files(remote, "restore", [*restore, *([unit] if unit.startswith(LOCAL_UNITS) else [])])
    again = [["systemctl", "daemon-reload"]]
    if state.flanneld.enabled != "disabled":
        again.append(["systemctl", "enable", "--no-reload", FLANNELD])
    systemd(remote, *again)
    if agent:
        remote.run(["systemctl", "start", FLANNELD], timeout=120, waiting_for="flanneld to start")


def take_over_docker(on: OnHost, probe: TakeoverProbe, mine: Ours, docker_files: list[str]) -> None:
    """execstart: docker's own unit gets the agent's flags. Then dockerd restarts only if the
    flags it runs with differ from the agent's (or docker0 is elsewhere); a restart that fails
    puts docker's files back and starts it as it was."""
    remote = on.remote
    if mine.dropin_text is None and edit_execstart(remote, on.family):
        docker_files = [*docker_files, probe.state.docker.fragment]
    now = read_state(remote)
    lease = now.lease
    decision = decide(now.docker, now.files, now.running, now.want, mine, docker0=now.docker0,
                      lease=lease)  # fmt: skip
    if not (decision.restart or decision.start):
        say(on, "docker keeps running: its flags are the agent's")
        return
    if decision.start:
        say(on, "docker starts")
    else:
        lost = stopped_for_good(remote)
        say(on, "docker restarts: " + ", ".join(decision.restart) + (
            f"; containers without a restart policy stay stopped: {', '.join(lost)}"
            if lost else ""))  # fmt: skip
    try:
        Docker().restart_unit(on, Probe(restart=True, lease=lease), together=False)
    except OverlayctlError as exc:
        files(remote, "restore", docker_files)
        remote.run(["systemctl", "daemon-reload"], check=False)
        remote.run(["systemctl", "start", "docker"], check=False, timeout=180)
        raise OverlayctlError(f"{on.target.name}: docker did not restart on the agent's flags "
                              f"({exc}); its unit files were put back") from None  # fmt: skip


# The running containers a docker restart stops for good: none with live-restore on, else those
# without a restart policy (one line each: name, then the policy).
_STOPPED_FOR_GOOD = (
    '[ "$(docker info -f "{{.LiveRestoreEnabled}}" 2>/dev/null)" = true ] && exit 0; '
    "docker ps -q | xargs -r docker inspect -f '{{.Name}} {{.HostConfig.RestartPolicy.Name}}'"
)


def stopped_for_good(remote: Remote) -> list[str]:
    """What to name before a docker restart (design 3.3 step 6): adopt's plan asked already."""
    out = remote.script(_STOPPED_FOR_GOOD, name="containers", check=False, timeout=60).stdout
    return [w[0].lstrip("/") for w in (ln.split() for ln in out.splitlines())
            if w and (len(w) == 1 or w[1] == "no")]  # fmt: skip
