"""adopt's TakeOver on one host (pure): what the host is like (takeover-state.sh's output) and
what is left to do there, so that any state a cut run leaves is recognised by the next one.

The steps, in order (docs/design/adopt.md 3.3): docker's unit files taken over
(plan/docker_takeover.py) and flanneld disabled and masked, in one daemon-reload (a drop-in
that ties docker to flanneld goes before flanneld stops; the running dockerd reads none of
it), the agent installed with an interim env, flanneld stopped, its leftover devices removed,
the agent started on the imported lease, then dockerd restarted only if its flags differ.
Every step is read from the host rather than remembered: flanneld disabled and stopped but no
agent -> the agent starts; both running -> flanneld stops and the agent restarts; everything
in place -> nothing to do.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from overlayctl.plan.docker_takeover import (
    DockerTakeover,
    DockerUnit,
    Ours,
    decide,
    effective_problems,
    parse_show,
)
from overlayctl.plan.handbuilt import DAEMON_JSON, DAEMON_JSON_NETWORK_KEYS

RUNNING_STATES = ("active", "activating", "reloading", "deactivating")


@dataclass(frozen=True)
class UnitInfo:
    """A unit as `systemctl show` says (LoadState not-found: no such unit)."""

    load: str = "not-found"
    active: str = "inactive"
    enabled: str = ""
    fragment: str = ""

    @property
    def present(self) -> bool:
        return self.load not in ("", "not-found")

    @property
    def running(self) -> bool:
        return self.active in RUNNING_STATES

    @property
    def masked(self) -> bool:
        return self.load == "masked" or self.enabled.startswith("masked")


@dataclass(frozen=True)
class HostState:
    """One host as takeover-state.sh found it."""

    flanneld: UnitInfo = UnitInfo()
    agent: UnitInfo = UnitInfo()
    flanneld_env: tuple[str, ...] = ()  # flanneld's EnvironmentFiles
    agent_ready: bool = False
    lease: str = ""  # subnet.env's FLANNEL_SUBNET (the lease's .1/len)
    want: str = ""  # DOCKER_NETWORK_OPTIONS in /run/flannel/docker (flanneld's or the agent's)
    links: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # device -> holder PIDs
    docker: DockerUnit = field(default_factory=DockerUnit)
    docker_show: str = ""  # systemctl show docker, as printed
    docker0: str = ""
    running: tuple[str, ...] = ()  # dockerd's argv ([] when it does not run)
    files: Mapping[str, str | None] = field(
        default_factory=dict
    )  # docker's unit files, daemon.json

    @property
    def subnet(self) -> str:
        """The agent's (or flanneld's) subnet from subnet.env, e.g. 172.21.31.0/24 ("": none)."""
        try:
            return str(ipaddress.IPv4Interface(self.lease).network) if self.lease else ""
        except ValueError:
            return ""


def _unit(words: list[str]) -> UnitInfo:
    values = dict(w.partition("=")[::2] for w in words)
    return UnitInfo(values.get("LoadState", "not-found"), values.get("ActiveState", "inactive"),
                    values.get("UnitFileState", ""), values.get("FragmentPath", ""))  # fmt: skip


def parse_state(text: str) -> HostState:
    """takeover-state.sh's output -> HostState."""
    units: dict[str, UnitInfo] = {}
    values: dict[str, str] = {}
    links: dict[str, tuple[int, ...]] = {}
    files: dict[str, str | None] = {}
    show, env, argv = [], [], []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "unit":
            name, *words = value.split()
            units[name] = _unit(words)
        elif key.startswith("docker."):
            show.append(line.removeprefix("docker."))
        elif key == "flanneld.EnvironmentFiles" and value:
            env.append(value.split()[0])
        elif key == "link":
            name, *pids = value.split()
            links[name] = tuple(int(p) for p in pids if p.isdigit())
        elif key == "arg":
            argv.append(value)
        elif key == "file":
            path, _, data = value.partition(" ")
            files[path] = _decoded(data)
        else:
            values[key] = value.strip()
    return HostState(
        flanneld=units.get("flanneld", UnitInfo()),
        agent=units.get("overlay-agent", UnitInfo()),
        flanneld_env=tuple(env),
        agent_ready=values.get("agent_ready") == "yes",
        lease=values.get("lease", ""),
        want=values.get("want", "").strip(),
        links=links,
        docker=parse_show("\n".join(show)),
        docker_show="\n".join(show),
        docker0=values.get("docker0", ""),
        running=tuple(a for a in argv if a),
        files=files,
    )


def _decoded(data: str) -> str | None:
    if data == "-":
        return None
    try:
        return base64.b64decode(data).decode(errors="replace")
    except (binascii.Error, ValueError):
        return None


def leftover_devices(state: HostState, backend: str) -> tuple[list[str], list[str]]:
    """Before the agent starts (flanneld stopped): flannel's devices to delete, and those a
    process still holds (the agent could not open them). A TUN flanneld opened vanishes with
    it, so a `flannel0`/`flannelN` left is a persistent one (hand-made, a fake's, an earlier
    agent's); `flannel.N` (vxlan) goes when the agent's backend is another."""
    delete, busy = [], []
    for name, holders in sorted(state.links.items()):
        vxlan = name.startswith("flannel.")
        if vxlan and backend == "vxlan":
            continue  # the agent takes it over
        (busy if holders and not vxlan else delete).append(name)
    return delete, busy


@dataclass(frozen=True)
class TakeoverPlan:
    """What is left to do on one host, in order; empty steps: taken over already."""

    flanneld_off: bool = False  # disable and mask flanneld (daemon-reload)
    stop_flanneld: bool = False
    start_agent: bool = False  # (re)start the agent, then /readyz and its lease
    docker: DockerTakeover | None = None
    write_dropin: bool = False  # our drop-in is missing or differs
    reload_docker: bool = False  # systemd has docker's unit files out of date
    unit_problems: tuple[str, ...] = ()  # why docker's loaded unit is not ours yet
    refusals: tuple[str, ...] = ()

    @property
    def docker_pending(self) -> bool:
        d = self.docker
        return d is not None and (d.unit_changes or bool(d.restart) or d.start or
                                  self.write_dropin or self.reload_docker or
                                  bool(self.unit_problems))  # fmt: skip

    def steps(self) -> list[str]:
        """One line per step left, for progress and `plan`."""
        lines = []
        if self.flanneld_off:
            lines.append("disable and mask flanneld")
        if self.stop_flanneld:
            lines.append("stop flanneld")
        if self.start_agent:
            lines.append("start overlay-agent on the imported lease")
        if self.docker_pending and self.docker is not None:
            if self.write_dropin:
                lines.append("write overlayctl's docker drop-in")
            elif self.unit_problems and not self.docker.unit_changes:
                lines.append(
                    "docker's ExecStart made overlayctl's: " + "; ".join(self.unit_problems)
                )
            lines += self.docker.describe()
        return lines


def daemon_json_refusals(text: str | None) -> list[str]:
    """/etc/docker/daemon.json keys that set what the agent's flags set (or move docker's bridge
    off the lease): dockerd refuses to start when a setting is both a flag and in that file, so
    the first docker restart after the takeover would leave it down. Refused before any change."""
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        return [f"{DAEMON_JSON} is not valid JSON (dockerd would not start again): fix it first"]
    keys = [k for k in DAEMON_JSON_NETWORK_KEYS if isinstance(doc, dict) and k in doc]
    if not keys:
        return []
    return [
        f"{DAEMON_JSON} sets {', '.join(keys)}: the agent's flags (--bip, --ip-masq, --mtu) set "
        "docker's bridge, and dockerd refuses a setting given both ways: take them out of "
        "daemon.json (the agent's /run/flannel/docker carries them), then re-run"
    ]


def plan_takeover(state: HostState, expected: str | None, ours: Ours, address: str) -> TakeoverPlan:
    """What is left on a host with STATE whose imported lease (v3) is EXPECTED (a subnet such
    as 172.21.31.0/24; None: none of ADDRESS in v3). OURS: what docker should run with."""
    if not state.flanneld.present and not state.agent.present:
        return TakeoverPlan()  # no flanneld here: nothing to take over (init's phases do it)
    refusals = []
    if expected is None:
        refusals.append(f"no lease of {address} in etcd's v3 key space: import the v2 leases "
                        "first (adopt's ImportV2), then re-run")  # fmt: skip
    flanneld = state.flanneld
    start_agent = not state.agent.running or not state.agent_ready or flanneld.running
    if not start_agent and expected is not None and state.subnet != expected:
        refusals.append(f"overlay-agent runs on {state.subnet or 'no lease'}, not on the "
                        f"imported {expected}: stop it, then re-run")  # fmt: skip
    docker = decide(state.docker, state.files, state.running, state.want, ours,
                    docker0=state.docker0, lease=state.lease)  # fmt: skip
    refusals += [*docker.refusals, *daemon_json_refusals(state.files.get(DAEMON_JSON))]
    write = ours.dropin_text is not None and state.files.get(ours.dropin) != ours.dropin_text
    return TakeoverPlan(
        flanneld_off=flanneld.present and not flanneld.masked,
        stop_flanneld=flanneld.running,
        start_agent=start_agent,
        docker=docker,
        write_dropin=write,
        reload_docker="NeedDaemonReload=yes" in state.docker_show,
        unit_problems=tuple(effective_problems(state.docker, ours, state.want)),
        refusals=tuple(refusals),
    )
