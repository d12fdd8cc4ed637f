"""What every phase is: the types the engine runs and the state of one rollout.

A phase has a title, says whether it should run and runs (k0sctl's Title/ShouldRun/Run). A host
phase adds what it owns and plans (pure, from facts) and how it applies and restarts (through
remote/); its `restart` declares the unit it restarts and how the restarts roll.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host, Inventory
from overlayctl.pki import Pki
from overlayctl.plan.changes import Action, DesiredFile, FileChange, HostPlan
from overlayctl.plan.config_change import ConfigChange
from overlayctl.plan.facts import Facts, RemoteFile
from overlayctl.plan.handbuilt import HandBuilt
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.session import RunOptions, Session
from overlayctl.remote.ssh import Command, Remote, batch_checked, command_of
from overlayctl.wheelhouse import AgentBundle


@dataclass
class RolloutOptions(RunOptions):
    restart_network: bool = False
    force: bool = False
    etcd_timeout: float = 90.0
    renew_certificates: bool = False  # `certs rotate`: new member and client certs, same CA
    new_ca: bool = False  # `certs rotate --new-ca`: a CA replacement begins unless one is under way


@dataclass
class RolloutReport:
    """What a rollout did, filled as it goes (it still tells when a phase raises)."""

    plans: dict[str, HostPlan] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    network_config: str = ""  # created, unchanged, replaced ("": not reached)
    seconds: float = 0.0
    # Wall seconds per phase, in run order (`connect`: SSH handshakes, root checks and locks),
    # and the waits inside them (`etcd health wait`, `docker restarts`: the slowest host's):
    # where the time of a run went, for `-o json` and the benchmarks.
    phases_s: dict[str, float] = field(default_factory=dict)

    def took(self, what: str, seconds: float) -> None:
        """Add SECONDS to WHAT's time (a phase that runs twice, e.g. join's, adds up)."""
        self.phases_s[what] = self.phases_s.get(what, 0.0) + seconds

    @property
    def total_changes(self) -> int:
        return sum(self.changes.values()) + (self.network_config in ("created", "replaced"))


@dataclass
class Target:
    """One host of the rollout: the host with its detected OS family, its facts, its plan, and
    the agent's bundle for its Python (node hosts)."""

    host: Host
    facts: Facts
    plan: HostPlan
    bundle: AgentBundle | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def family(self) -> str:
        return self.host.os or "debian"


@dataclass
class Rollout:
    """The state one run of phases shares: its session, options and report, and what the facts
    phase found (never written back into the inventory)."""

    session: Session
    options: RolloutOptions
    report: RolloutReport = field(default_factory=RolloutReport)
    targets: dict[str, Target] = field(default_factory=dict)
    change: ConfigChange | None = None  # the network config in etcd differs from the inventory's
    known_config: dict | None = None  # the network config in etcd before any phase ran
    pki: Pki | None = None
    handbuilt: HandBuilt | None = None  # what the facts show of a cluster built by hand
    # Work a phase left running beside the next ones (agent_prefetch's installs): each is
    # called when the phases end, with whether they failed (then what has not started yet is
    # cancelled), and waited for before the connections close.
    background: list[Callable[[bool], None]] = field(default_factory=list)

    @property
    def inv(self) -> Inventory:
        return self.session.inv

    def live(self, runs_on: Callable[[Host], bool] | None = None) -> list[Target]:
        """The targets still in the run, in inventory order (only those RUNS_ON accepts)."""
        return [
            self.targets[h.name]
            for h in self.session.alive
            if h.name in self.targets and (runs_on is None or runs_on(h))
        ]

    def remote(self, target: Target | Host) -> Remote:
        return self.session.remotes[target.host.name if isinstance(target, Target) else target.name]

    def say(self, who: str, phase: str, message: str) -> None:
        """A progress line: `node1        etcd      4 changes`."""
        self.session.reporter.host(who, phase, message)


@dataclass(frozen=True)
class OnHost:
    """One host while a host phase applies there: the rollout, the host's connection, and what
    the facts phase found for it."""

    rollout: Rollout
    remote: Remote
    target: Target

    @property
    def family(self) -> str:
        return self.target.family

    @property
    def inv(self) -> Inventory:
        return self.rollout.inv


class Phase(Protocol):
    """One step of a rollout (k0sctl's Title/ShouldRun/Run)."""

    title: str

    def should_run(self, rollout: Rollout) -> bool: ...

    def run(self, rollout: Rollout) -> None: ...


class Rolling(enum.Enum):
    """How a phase's restarts roll over the hosts that need one. The words say why, in the
    progress line of a host restarted alone."""

    AT_ONCE = "at once"  # every host together
    ONE_BY_ONE = "one host at a time"  # where the unit runs already (its service is in use)
    WHERE_BUSY = "containers run"  # one at a time where containers run, at once elsewhere
    # A running cluster one member at a time, each healthy before the next; a new one together
    # (a first member alone never reaches quorum).
    KEEP_QUORUM = "quorum"
    SEPARATELY = "a phase of its own"  # a later phase starts it (join adds members one by one)


@dataclass(frozen=True)
class Restart:
    """The unit a phase (re)starts, and how those restarts roll."""

    unit: str
    rolling: Rolling


@dataclass(frozen=True)
class PlanInput:
    """What a host phase plans its actions from (pure)."""

    host: Host
    family: str
    facts: Facts
    desired: dict[str, DesiredFile]  # every file the host should have (its phase's and others')
    changed: frozenset[str]  # paths whose content, mode or owner differ
    installing: str  # the packages this run installs, space-separated (the facts predate them)
    restart_network: bool = False
    agent_digest: str | None = None  # the agent bundle to have installed (node hosts)
    docker_mode: str = "dropin"


@dataclass(frozen=True)
class Probe:
    """A host phase's look at a host right before it applies there: whether its unit must
    restart, whether that restart stops containers, and what the restart needs to know."""

    restart: bool
    busy: bool = False
    lease: str = ""


SYSTEMD_KINDS = ("daemon-reload", "enable")  # every phase's own systemd actions (act_systemd)
RELOAD = HostScript("reload-if-needed.sh")
_ENABLE = ["env", "SYSTEMCTL_SKIP_SYSV=1", "systemctl", "enable", "--no-reload"]


class HostPhase:
    """A phase applied host by host: its files, then its actions, then its unit's restart.

    Subclasses name themselves, the paths they own and the actions they plan (pure), and how
    they carry out those actions and restart their unit (through Remote). The engine runs them
    (engine.run_host_phase).
    """

    name: ClassVar[str]
    restart: Restart | None = None
    probe_hosts: ClassVar[bool] = False  # probe() looks at the host (a round trip), in parallel
    # Its unit's own file (never a drop-in) is all the phase writes for systemd: its
    # daemon-reload then runs only where systemd says the unit needs one (reload-if-needed.sh).
    # systemd 252 does not see a drop-in folder made after it loaded the unit (NeedDaemonReload
    # stays "no"), so a phase with drop-ins always reloads.
    unit_file_only: ClassVar[bool] = False

    @property
    def title(self) -> str:
        return self.name

    def runs_on(self, host: Host) -> bool:
        """Which hosts the phase (and a quorum of its unit) concerns."""
        return True

    # -- planning (pure) ---------------------------------------------------------------------

    def owns(self, path: str) -> bool:
        """Whether the file at PATH is written in this phase."""
        return False

    def keeps(self, path: str, facts: Facts) -> bool:
        """Whether a file this phase owns is wanted on a host with FACTS at all."""
        return True

    def same(
        self, host: Host, path: str, have: RemoteFile, want: DesiredFile, facts: Facts
    ) -> bool:
        """Whether HAVE's content already is WANT's."""
        return have.content == want.content

    def actions(self, inp: PlanInput) -> list[Action]:
        return []

    # -- applying ------------------------------------------------------------------------------

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def probe(self, on: OnHost) -> Probe:
        """Whether the unit must restart here: by default, when the plan says so."""
        unit = self.restart.unit if self.restart else ""
        return Probe(restart=bool(unit) and on.target.plan.wants(unit, "start", "restart"))

    def running(self, target: Target) -> bool:
        """Whether the unit runs here already (a restart then interrupts its service)."""
        return self.restart is not None and not target.plan.wants(self.restart.unit, "start")

    def write(self, on: OnHost, changes: list[FileChange]) -> None:
        """The phase's files that differ, in one round trip (each atomically, with its backup)."""
        files = [(c.path, c.desired.content, c.desired.mode, f"{c.desired.owner}:{c.desired.owner}")
                 for c in changes]  # fmt: skip
        on.remote.put_files(files)

    def act(self, on: OnHost, action: Action) -> None:
        """Carry out one of the phase's actions (its unit's start and restart excepted: the
        engine does those). systemd's daemon-reload and enable are every phase's.

        `enable --no-reload`: a plain enable reloads systemd once more (every generator runs
        again); the plan's own daemon-reload comes first where a unit file changed, and the
        unit's start is explicit. At 25 hosts those extra reloads were a third of init's CPU."""
        if action.kind not in SYSTEMD_KINDS:
            raise OverlayctlError(f"{self.name}: no way to {action.kind} {action.target}")
        self.act_systemd(on, [action])

    def act_systemd(self, on: OnHost, actions: list[Action]) -> None:
        """ACTIONS, each a daemon-reload or an enable, in one round trip (also `act`'s way):
        the engine hands over each run of them in the plan's order.

        The enable skips the SysV sync (SYSTEMCTL_SKIP_SYSV): where a unit also has an init
        script (Debian's docker), systemctl would run update-rc.d for a sysvinit boot that a host
        running these units never makes: 0.3 CPU-s a host, 8 of init's 70 at 25 hosts."""
        commands = [self._systemd_command(a) for a in actions]
        batch_checked(on.remote, commands, waiting_for="systemd")

    def _systemd_command(self, action: Action) -> Command:
        if action.kind == "enable":
            return [*_ENABLE, action.target], f"systemctl enable --no-reload {action.target}"
        if self.unit_file_only and self.restart:
            return command_of(RELOAD, self.restart.unit)
        return ["systemctl", "daemon-reload"], "systemctl daemon-reload"

    def finish(self, on: OnHost) -> int:
        """After the files and actions, before the restart; returns the changes it made."""
        return 0

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        """(Re)start the unit here. TOGETHER: every host at once (etcd: do not wait for it)."""
        raise OverlayctlError(f"{self.name}: cannot restart {self.restart}")

    def start_new(
        self, rollout: Rollout, targets: list[Target], probes: dict[str, Probe]
    ) -> list[str]:
        """Start the unit of a new cluster (KEEP_QUORUM, none running yet) on TARGETS: all at
        once by default. Returns the hosts where it started."""
        started = rollout.session.each(
            self.name,
            lambda h, r: self.restart_unit(
                OnHost(rollout, r, rollout.targets[h.name]), probes[h.name], together=True
            ),
            [t.host for t in targets],
        )
        return list(started.succeeded)

    def healthy(self, rollout: Rollout) -> float:
        """Wait until the unit's cluster is healthy (KEEP_QUORUM); returns the seconds it took."""
        return 0.0

    def admit(self, rollout: Rollout, targets: list[Target]) -> None:
        """Before TARGETS restart one by one in a running cluster: refuse what would break it."""
