"""Desired state + facts -> the changes `init` would make on one host. Pure: no I/O at all.

A HostPlan lists, per phase, the files that differ (content, mode or owner) and the actions
(package installs, hostname, sysctl, systemd) that are needed. An empty plan means a re-run
changes nothing and restarts nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from overlayctl import paths as hp
from overlayctl.inventory.model import Host
from overlayctl.plan.facts import Facts, RemoteFile

PHASES = ("prepare", "packages", "pki", "etcd", "agent", "docker")

PACKAGES = {
    # family -> role ("all", "etcd", "node") -> packages
    "debian": {
        "all": ("iptables", "iproute2", "etcd-client", "iputils-ping"),
        "etcd": ("etcd-server",),
        "node": ("python3", "python3-venv", "docker.io"),
    },
    # etcd: EPEL (RHEL 9 has none); docker-ce: Docker's repository (the seed's dockerd). Plain
    # "docker" would be podman-docker on EL9. overlayctl adds no repositories (see README).
    "rhel": {
        "all": ("iptables", "iproute", "iputils"),
        "etcd": ("etcd",),
        "node": ("python3", "docker-ce"),
    },
}
_PREPARE_PATHS = (hp.HOSTNAME, hp.HOSTS, hp.SYSCTL)
_ETCD_PATHS = (hp.ETCD_CONF, hp.ETCD_DROPIN)
_ETCD_PKI = {f.path for f in hp.PKI_FILES if f.etcd_only} | {hp.CA_CERT}
_AGENT_PATHS = {hp.AGENT_UNIT, *hp.AGENT_ENV.values()}
_CLIENT_PKI = {hp.CA_CERT, hp.ETCD_CLIENT_CERT, hp.ETCD_CLIENT_KEY}


@dataclass(frozen=True)
class DesiredFile:
    content: bytes
    mode: int
    owner: str  # user; the group is the user's own group

    @property
    def secret(self) -> bool:
        return self.mode & 0o077 == 0 and self.owner != "" and self.content.startswith(b"-----")


@dataclass(frozen=True)
class FileChange:
    phase: str
    path: str
    desired: DesiredFile
    current: RemoteFile

    @property
    def kind(self) -> str:
        if self.current.content is None:
            return "create"
        return "update" if self.current.content != self.desired.content else "attributes"

    def diff(self) -> str:
        """A unified diff, never showing a private key's content."""
        lines = []
        if self.kind != "create" and (self.current.mode, _user(self.current.owner)) != (
            self.desired.mode, self.desired.owner,
        ):  # fmt: skip
            lines.append(
                f"# {self.path}: mode {self.current.mode:04o} -> {self.desired.mode:04o}, "
                f"owner {_user(self.current.owner)} -> {self.desired.owner}\n"
            )
        if self.kind == "attributes":
            return "".join(lines)
        if self.desired.secret:
            verb = "created" if self.kind == "create" else "replaced"
            return "".join(lines) + f"# {self.path}: private key {verb} (content not shown)\n"
        old = (self.current.content or b"").decode(errors="replace").splitlines(keepends=True)
        new = self.desired.content.decode(errors="replace").splitlines(keepends=True)
        before = "/dev/null" if self.kind == "create" else f"a{self.path}"
        diff = difflib.unified_diff(old, new, before, f"b{self.path}")
        return "".join(lines) + "".join(d if d.endswith("\n") else d + "\n" for d in diff)


@dataclass(frozen=True)
class Action:
    phase: str
    kind: str  # install, hostname, sysctl, restart-network, reload (firewalld), add-service,
    # daemon-reload, enable, start, restart
    target: str

    def __str__(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass
class HostPlan:
    host: str
    files: list[FileChange] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.files) + len(self.actions)

    def wants(self, unit: str, *kinds: str) -> bool:
        """Whether the plan has a KINDS action (e.g. "start", "restart") for UNIT."""
        return any(a.kind in kinds and a.target == unit for a in self.actions)

    def in_phase(self, phase: str) -> tuple[list[FileChange], list[Action]]:
        return (
            [f for f in self.files if f.phase == phase],
            [a for a in self.actions if a.phase == phase],
        )


def wanted_packages(host: Host, family: str) -> list[str]:
    roles = PACKAGES[family]
    return [
        *roles["all"],
        *(roles["etcd"] if host.is_etcd else ()),
        *(roles["node"] if host.is_node else ()),
    ]


def _static_ip(path: str) -> bool:
    return path.startswith((hp.RHEL_IFCFG_DIR, hp.DEBIAN_INTERFACES_DIR))


def _firewalld(path: str) -> bool:
    return path.startswith(hp.FIREWALLD_DIR + "/")


def phase_of(path: str) -> str:
    if path in _PREPARE_PATHS or _static_ip(path) or _firewalld(path):
        return "prepare"
    if path in _ETCD_PATHS:
        return "etcd"
    if path.startswith(hp.PKI_DIR + "/"):
        return "pki"
    if path == hp.DOCKER_DROPIN:
        return "docker"
    return "agent"


def plan_host(
    host: Host,
    family: str,
    desired: dict[str, DesiredFile],
    current: dict[str, RemoteFile],
    facts: Facts,
    *,
    restart_network: bool = False,
    agent_digest: str | None = None,
    docker_mode: str = "dropin",
) -> HostPlan:
    """AGENT_DIGEST: the fingerprint of the agent wheelhouse to have installed (node hosts)."""
    plan = HostPlan(host.name)
    if facts.firewalld is None:  # firewalld files only where firewalld is active
        desired = {p: f for p, f in desired.items() if not _firewalld(p)}
    bootstrapped = hp.etcd_data_dir(host.name) in facts.etcd_data_dirs
    for path in sorted(desired, key=lambda p: (PHASES.index(phase_of(p)), p)):
        want, have = desired[path], current.get(path, RemoteFile(path, None))
        same = _same_content(path, have.content, want.content, bootstrapped)
        same = same and have.mode == want.mode
        if not (same and _user(have.owner) == want.owner):
            plan.files.append(FileChange(phase_of(path), path, want, have))
    changed = {f.path for f in plan.files}

    if facts.hostname != host.name:
        plan.actions.append(Action("prepare", "hostname", host.name))
    if not facts.ip_forward:
        plan.actions.append(Action("prepare", "sysctl", "net.ipv4.ip_forward=1"))
    if any(_static_ip(p) for p in changed) and restart_network and host.iface:
        plan.actions.append(Action("prepare", "restart-network", host.iface))
    plan.actions += _firewalld_actions(host, desired, changed, facts)
    missing = [p for p in wanted_packages(host, family) if p not in facts.packages]
    if missing:
        plan.actions.append(Action("packages", "install", " ".join(missing)))
    installing = " ".join(missing)
    if host.is_etcd:
        plan.actions += _service_actions(
            "etcd", "etcd", facts, reload=hp.ETCD_DROPIN in changed,
            restart=bool(changed & (set(_ETCD_PATHS) | _ETCD_PKI)),
            fresh="etcd" in installing,
        )  # fmt: skip
    if host.is_node and agent_digest is not None:
        install = facts.agent_digest != agent_digest
        if install:
            plan.actions.append(Action("agent", "install-agent", agent_digest[:12]))
        plan.actions += _service_actions(
            "agent", "overlay-agent", facts, reload=hp.AGENT_UNIT in changed,
            restart=install or bool(changed & (_AGENT_PATHS | _CLIENT_PKI)),
            fresh=not facts.agent_digest,
        )  # fmt: skip
        switch = _docker_mode_actions(docker_mode, facts)
        plan.actions += switch
        unit_changed = hp.DOCKER_DROPIN in changed or bool(switch)
        plan.actions += _service_actions(
            "docker", "docker", facts, reload=unit_changed, restart=unit_changed,
            fresh="docker" in installing,
        )  # fmt: skip
    return plan


def _docker_mode_actions(mode: str, facts: Facts) -> list[Action]:
    """What makes docker's units match MODE, whatever the other mode left: execstart edits
    docker's own unit and must not keep our drop-in (its ExecStart would win); dropin puts the
    vendor unit back from the backup made by the edit."""
    if mode == "execstart":
        actions = []
        if facts.docker_dropin:
            actions.append(Action("docker", "remove-file", hp.DOCKER_DROPIN))
        if not facts.docker_unit_edited:
            actions.append(Action("docker", "edit-execstart", facts.docker_unit or "docker"))
        return actions
    if facts.docker_unit_edited:
        return [Action("docker", "restore-file", facts.docker_unit)]
    return []


def _firewalld_actions(
    host: Host, desired: dict[str, DesiredFile], changed: set[str], facts: Facts
) -> list[Action]:
    """Reload firewalld when its files changed (so it knows them), then enable every service of
    ours that the zone of the host's underlay interface does not have yet (permanent + runtime).
    """
    fw = facts.firewalld
    if fw is None:
        return []
    actions = []
    if any(_firewalld(p) for p in changed):
        actions.append(Action("prepare", "reload", "firewalld"))
    zone = fw.zone_of(facts.iface_of(host.address))
    prefix, suffix = f"{hp.FIREWALLD_DIR}/services/", ".xml"
    for path in sorted(p for p in desired if p.startswith(prefix)):
        service = path.removeprefix(prefix).removesuffix(suffix)
        if service not in fw.services.get(zone, frozenset()):
            actions.append(Action("prepare", "add-service", f"{service} zone={zone}"))
    return actions


def _service_actions(
    phase: str, unit: str, facts: Facts, *, reload: bool, restart: bool, fresh: bool
) -> list[Action]:
    """daemon-reload / enable / start or restart UNIT, each only when needed.

    FRESH: the unit's package is being installed in this run (facts predate it).
    """
    state = facts.units.get(unit)
    active = state is not None and state.active == "active" and not fresh
    actions = []
    if reload:
        actions.append(Action(phase, "daemon-reload", "systemd"))
    if fresh or state is None or state.enabled != "enabled":
        actions.append(Action(phase, "enable", unit))
    if not active:
        actions.append(Action(phase, "start", unit))
    elif restart:
        actions.append(Action(phase, "restart", unit))
    return actions


def _same_content(path: str, have: bytes | None, want: bytes, bootstrapped: bool) -> bool:
    """Equal, or (etcd.conf of a member whose data dir exists) equal but for ETCD_INITIAL_*.

    etcd reads ETCD_INITIAL_* only when it bootstraps an empty data dir. A member that joined a
    live cluster keeps the initial cluster it joined with; rewriting those lines later would
    change nothing in etcd but would make every re-run report a change. Before the member has
    data, those lines are exactly what matters, so then they must match.
    """
    if have == want:
        return True
    if path != hp.ETCD_CONF or have is None or not bootstrapped:
        return False
    return _without_initial(have) == _without_initial(want)


def _without_initial(content: bytes) -> list[bytes]:
    return [line for line in content.splitlines() if not line.startswith(b"ETCD_INITIAL_")]


def _user(owner: str | None) -> str:
    return (owner or "").split(":")[0]
