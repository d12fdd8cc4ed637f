"""adopt's TakeOver, docker's side (pure): what must change in docker's units so that the
agent's /run/flannel/docker drives dockerd, and whether dockerd must restart for it.

A hand-built host starts dockerd with `--bip=... --ip-masq=true --mtu=1472` from an edit of the
vendor unit, a hand-made drop-in (`systemctl edit docker` makes `override.conf`, which sorts
after our `overlayctl.conf` and wins silently) or flanneld's RPM drop-in. The inputs are what
`systemctl show docker` says (what wins, without a restart), the unit files' texts, and
dockerd's running argv; nothing here touches a host. The rules:
- a drop-in that only sets what ours replaces (ExecStart, EnvironmentFile) or ties docker to
  flanneld is backed up and removed; one that mixes those with anything else is refused by name
  (removing it would drop settings a human chose; keeping it would override ours);
- the unit file's ExecStart loses its network flags (ours set them; a unit still carrying
  `--bip=` reads as `docker.mode: execstart` to the facts, and to an operator as the truth);
- dockerd restarts only when the flags it runs with differ from the agent's (a restart without
  live-restore stops every container, and those without a restart policy stay stopped): in the
  runbook's case they are equal, and every container keeps running;
- flags dockerd runs with that the new ExecStart would not give are refused by name (the next
  docker restart would drop them silently).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# `systemctl show docker -p ...`: what TakeOver asks (one call).
SHOW_PROPERTIES = (
    "DropInPaths", "ExecStart", "EnvironmentFiles", "Requires", "BindsTo", "PartOf",
    "FragmentPath", "MainPID",
)  # fmt: skip
# Through these, stopping a unit stops docker too (a hand-written flanneld unit's
# `RequiredBy=docker.service` shows as docker's Requires=flanneld.service while it is enabled).
STOP_BINDINGS = ("Requires", "BindsTo", "PartOf")
# The flags the agent's /run/flannel/docker gives, and dockerd's values when a flag is absent.
NETWORK_FLAGS = {"--bip": "", "--ip-masq": "true", "--mtu": "1500"}
# What our drop-in sets itself (ExecStart reset and replaced, the agent's options file).
REPLACED = frozenset({"ExecStart", "EnvironmentFile"})
# Unit settings that only order or bind docker to other units: moot when they name flanneld only
# (masked, a Requires= on it would even keep docker from starting).
DEPENDENCIES = frozenset({"After", "Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf"})
FLANNELD = "flanneld.service"
# dockerd's one-letter aliases, so that `-H fd://` and `--host=fd://` compare equal.
_ALIASES = {"-H": "--host", "-D": "--debug", "-l": "--log-level", "-G": "--group",
            "-g": "--data-root", "-b": "--bridge", "-p": "--pidfile"}  # fmt: skip
_OPTIONS = ("$DOCKER_NETWORK_OPTIONS", "${DOCKER_NETWORK_OPTIONS}")  # the agent's, in ExecStart
_ARGV = re.compile(r"argv\[\]=(.*?) ; ignore_errors=")
_FLAG_IN_LINE = re.compile(r"[ \t]+--(?:bip|mtu)(?:=|[ \t]+)\S+|[ \t]+--ip-masq(?:=\S+)?(?=\s|$)")


@dataclass(frozen=True)
class DockerUnit:
    """docker.service as systemd has it loaded (`systemctl show`)."""

    fragment: str = ""
    dropins: tuple[str, ...] = ()
    exec_start: tuple[str, ...] = ()  # the argv systemd runs, variables not expanded
    env_files: tuple[str, ...] = ()
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # STOP_BINDINGS
    main_pid: int = 0

    def binds(self, unit: str = FLANNELD) -> list[str]:
        """The properties through which stopping UNIT stops docker (e.g. ["Requires"])."""
        return [p for p in STOP_BINDINGS if unit in self.bindings.get(p, ())]


def parse_show(text: str) -> DockerUnit:
    """`systemctl show docker -p ...` -> DockerUnit (EnvironmentFiles= comes once per file;
    `ExecStart={ path=... ; argv[]=... ; ignore_errors=... }`, the last command counts)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key.strip(), []).append(value.strip())
    argvs = _ARGV.findall(" ".join(values.get("ExecStart", [])))
    pid = "".join(values.get("MainPID", []))
    return DockerUnit(
        fragment="".join(values.get("FragmentPath", [])),
        dropins=tuple(" ".join(values.get("DropInPaths", [])).split()),
        exec_start=tuple(argvs[-1].split()) if argvs else (),
        env_files=tuple(v.split()[0] for v in values.get("EnvironmentFiles", []) if v),
        bindings={p: tuple(" ".join(values.get(p, [])).split()) for p in STOP_BINDINGS},
        main_pid=int(pid) if pid.isdigit() else 0,
    )


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    value: str


def unit_settings(text: str) -> list[Setting]:
    """Every `Key=value` of a unit file, with its section (comments and blank lines skipped,
    backslash continuations joined)."""
    settings, section, pending = [], "", ""
    for raw in text.splitlines():
        line = (pending + " " + raw.strip()) if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            settings.append(Setting(section, key.strip(), value.strip()))
    return settings


def flag_pairs(argv: Sequence[str]) -> list[tuple[str, str]]:
    """dockerd's arguments (a leading program name skipped) as (flag, value) pairs: `--x=v`,
    `--x v` and a bare boolean `--x` (value "true") alike; dockerd takes no positional
    arguments, so a word after a flag is its value."""
    pairs: list[tuple[str, str]] = []
    words = list(argv[1:] if argv and not argv[0].startswith("-") else argv)
    i = 0
    while i < len(words):
        name, sep, value = words[i].partition("=")
        name = _ALIASES.get(name, name)
        if not sep and i + 1 < len(words) and not words[i + 1].startswith("-"):
            value, i = words[i + 1], i + 1
        elif not sep:
            value = "true"
        pairs.append((name, value))
        i += 1
    return pairs


def network_flags(argv: Sequence[str]) -> dict[str, str]:
    """The values of --bip, --ip-masq and --mtu in ARGV (dockerd's defaults where absent; the
    last one given wins, as in dockerd)."""
    found = dict(NETWORK_FLAGS)
    for name, value in flag_pairs(argv):
        if name in found:
            found[name] = value
    return found


def flag_changes(running: Sequence[str], want: Sequence[str]) -> list[str]:
    """How the network flags of the RUNNING argv differ from WANT's (`--mtu 1500 -> 1472`)."""
    have, new = network_flags(running), network_flags(want)
    return [f"{k} {have[k] or '(none)'} -> {new[k] or '(none)'}" for k in NETWORK_FLAGS
            if have[k] != new[k]]  # fmt: skip


def lost_flags(running: Sequence[str], new: Sequence[str]) -> list[str]:
    """Flags of the RUNNING dockerd that the NEW argv would not give (network flags aside: those
    are the agent's to set)."""
    keep = set(flag_pairs(new))
    return [f"{k}={v}" for k, v in flag_pairs(running) if k not in NETWORK_FLAGS
            and (k, v) not in keep]  # fmt: skip


def strip_network_flags(text: str) -> str:
    """TEXT (a unit file) with --bip, --ip-masq and --mtu removed from its ExecStart lines
    (and their continuation lines); every other line kept byte for byte."""
    out, in_exec = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("ExecStart=") or in_exec:
            body = line.rstrip("\n")
            in_exec = body.rstrip().endswith("\\")
            out.append(_FLAG_IN_LINE.sub("", body) + line[len(body) :])
        else:
            out.append(line)
    return "".join(out)


@dataclass(frozen=True)
class Ours:
    """What our side gives docker: the drop-in's path and text ("" and None with `docker.mode:
    execstart`, where docker's own unit carries the agent's flags), the agent's options file,
    and the ExecStart argv that results (variables not expanded, as systemctl shows it)."""

    dropin: str
    dropin_text: str | None
    opts_file: str
    exec_start: tuple[str, ...]

    def argv(self, want: str) -> list[str]:
        """The dockerd argv our ExecStart gives with the agent's options WANT."""
        options = want.split()
        return [w for word in self.exec_start for w in (options if word in _OPTIONS else [word])]


def ours_from_dropin(path: str, text: str, opts_file: str) -> Ours:
    """Ours with the drop-in at PATH holding TEXT: its last ExecStart is dockerd's."""
    lines = [s.value for s in unit_settings(text) if s.key == "ExecStart" and s.value]
    return Ours(path, text, opts_file, tuple(lines[-1].split()) if lines else ())


@dataclass(frozen=True)
class DropIn:
    path: str
    verdict: str  # ours | keep | remove | refuse
    why: str = ""


def judge_dropin(path: str, text: str | None, ours: Ours) -> DropIn:
    """What becomes of one of docker's drop-ins."""
    if path == ours.dropin:
        return DropIn(path, "ours")
    settings = unit_settings(text or "")
    ours_too = [s for s in settings if _replaced(s, ours) or _ties_to_flanneld(s)]
    if not ours_too:
        return DropIn(path, "keep", "sets nothing ours does")
    other = sorted({s.key for s in settings if s not in ours_too and not _same(s, ours)})
    what = ", ".join(sorted({s.key for s in ours_too}))
    if other:
        why = (
            f"{path} sets {', '.join(other)} besides {what}: removing it would drop those, "
            "keeping it would override overlayctl's drop-in. Move them to a drop-in of their "
            "own (without ExecStart or EnvironmentFile), then re-run"
        )
        return DropIn(path, "refuse", why)
    return DropIn(path, "remove", f"sets {what}")


def _replaced(setting: Setting, ours: Ours) -> bool:
    """SETTING is one ours replaces."""
    return setting.key in REPLACED and not _same(setting, ours)


def _same(setting: Setting, ours: Ours) -> bool:
    """SETTING is one ours has too: the agent's options file (flannel's RPM drop-in has only
    that, and stays)."""
    return setting.key == "EnvironmentFile" and setting.value.lstrip("-") == ours.opts_file


def _ties_to_flanneld(setting: Setting) -> bool:
    units = setting.value.split()
    return setting.key in DEPENDENCIES and bool(units) and all(u == FLANNELD for u in units)


@dataclass(frozen=True)
class DockerTakeover:
    """What TakeOver does to docker on one host."""

    remove: tuple[str, ...] = ()  # hand-made drop-ins: backed up, then removed
    keep: tuple[str, ...] = ()  # other drop-ins, left alone
    strip: str = ""  # the unit file whose ExecStart carries network flags ("": none)
    stripped: str = ""  # its text without them
    refusals: tuple[str, ...] = ()  # why TakeOver must not go on here, each naming a file
    restart: tuple[str, ...] = ()  # why dockerd must restart ("": it keeps running)
    start: bool = False  # dockerd does not run: it starts (no container to stop)

    @property
    def unit_changes(self) -> bool:
        return bool(self.remove or self.strip)

    def describe(self) -> list[str]:
        """One line per step, for progress and `plan`."""
        lines = [f"back up and remove {p}" for p in self.remove]
        if self.strip:
            lines.append(f"remove --bip/--ip-masq/--mtu from {self.strip}'s ExecStart (backed up)")
        if self.start:
            lines.append("start docker")
        elif self.restart:
            lines.append("restart docker: " + ", ".join(self.restart))
        else:
            lines.append("docker keeps running (its flags are the agent's)")
        return lines


def decide(
    unit: DockerUnit,
    files: Mapping[str, str | None],
    running: Sequence[str],
    want: str,
    ours: Ours,
    *,
    docker0: str = "",
    lease: str = "",
) -> DockerTakeover:
    """FILES: the texts of UNIT's fragment and drop-ins (None: unreadable). RUNNING: dockerd's
    argv ([] when it is not running). WANT: the agent's DOCKER_NETWORK_OPTIONS. DOCKER0 and
    LEASE: docker0's address and the lease's .1 (a bridge elsewhere needs a restart too)."""
    judged = [judge_dropin(p, files.get(p), ours) for p in unit.dropins]
    refusals = [d.why for d in judged if d.verdict == "refuse"]
    text = files.get(unit.fragment) or ""
    # execstart: docker's own unit gets our ExecStart whole (phases/docker.py edit_execstart)
    stripped = strip_network_flags(text) if ours.dropin_text is not None else text
    if running:
        lost = lost_flags(running, ours.argv(want))
        if lost:
            refusals.append(
                f"dockerd runs with {' '.join(lost)}, which docker's new ExecStart would not "
                "give: put them in /etc/docker/daemon.json (or a drop-in without ExecStart), "
                "then re-run"
            )
    changes = flag_changes(running, want.split()) if running else []
    if running and docker0 and lease and docker0 != lease:
        changes.append(f"docker0 {docker0} -> {lease}")
    return DockerTakeover(
        remove=tuple(d.path for d in judged if d.verdict == "remove"),
        keep=tuple(d.path for d in judged if d.verdict == "keep"),
        strip=unit.fragment if stripped != text else "",
        stripped=stripped if stripped != text else "",
        refusals=tuple(refusals),
        restart=tuple(changes),
        start=not running,
    )


def effective_problems(unit: DockerUnit, ours: Ours, want: str) -> list[str]:
    """After the change and a daemon-reload: what `systemctl show docker` still gets wrong
    (our ExecStart must be the one that wins, and docker must read the agent's file)."""
    problems = []
    if ours.dropin_text is not None and ours.dropin not in unit.dropins:
        problems.append(f"{ours.dropin} is not among docker's drop-ins")
    if ours.dropin_text is not None:
        wins = unit.exec_start == ours.exec_start
    else:  # execstart: docker's own unit holds the agent's flags literally
        wins = network_flags(unit.exec_start) == network_flags(want.split())
    if not wins:
        last = unit.dropins[-1] if unit.dropins else unit.fragment
        problems.append(f"ExecStart is `{' '.join(unit.exec_start)}` (from {last}), not ours")
    if ours.opts_file not in unit.env_files:
        problems.append(f"docker does not read {ours.opts_file} (EnvironmentFiles)")
    return problems
