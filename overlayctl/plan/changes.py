"""The per-host plan: which files differ (content, mode or owner) and which actions (package
installs, hostname, sysctl, systemd) are needed, each in its phase; and the diff that `plan`
shows. Pure: no I/O at all. An empty plan means a re-run changes nothing and restarts nothing.

Each phase (overlayctl/phases/) decides its own files and actions; plan_host there puts them
together in the phases' order.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from overlayctl.plan.facts import Facts, RemoteFile


@dataclass(frozen=True)
class DesiredFile:
    content: bytes
    mode: int
    owner: str  # user; the group is the user's own group

    @property
    def secret(self) -> bool:
        """A private key or password (0600): a diff shows that it changed, never its content."""
        return self.mode & 0o077 == 0 and self.owner != ""


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
            what = "private key" if self.desired.content.startswith(b"-----") else "secret"
            return "".join(lines) + f"# {self.path}: {what} {verb} (content not shown)\n"
        old = (self.current.content or b"").decode(errors="replace").splitlines(keepends=True)
        new = self.desired.content.decode(errors="replace").splitlines(keepends=True)
        before = "/dev/null" if self.kind == "create" else f"a{self.path}"
        diff = difflib.unified_diff(old, new, before, f"b{self.path}")
        return "".join(lines) + "".join(d if d.endswith("\n") else d + "\n" for d in diff)


@dataclass(frozen=True)
class Action:
    phase: str
    kind: str  # what its phase does: install, hostname, sysctl, daemon-reload, enable, start, ...
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


def service_actions(
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


def same_owner(have: RemoteFile, want: DesiredFile) -> bool:
    return _user(have.owner) == want.owner


def _user(owner: str | None) -> str:
    return (owner or "").split(":")[0]
