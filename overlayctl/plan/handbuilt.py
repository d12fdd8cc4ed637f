"""What a cluster built by hand from the runbook has, as facts (docs/design/adopt.md 1.3, 1.6,
2.3): per host flanneld's unit, docker's effective unit, hand-made drop-ins, daemon.json's
network keys, flannel's devices and routes, what flanneld left in /run/flannel, an etcd.conf
overlayctl did not write, the running containers; per cluster the members' peer URLs and the
v2 keys. Pure: facts.sh's and etcd-found.sh's output and the files read-files.sh read go in, one
`HandBuilt` record comes out. Gathered by overlayctl/phases/facts.py in its one round trip.

Why init needs this before it writes anything (adopt.md 2.5): on such a cluster init rewrote
etcd.conf to https while the members' peer URLs in etcd still said http, and etcd never came
back (issue 21). `HandBuilt.refusal` says why init stops and points to `overlayctl adopt`;
`plan` shows the same record.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from dataclasses import dataclass, field

from overlayctl import paths as hp
from overlayctl.plan.facts import Facts, RemoteFile, UnitState, env_settings

# The start of the header line every file overlayctl renders opens with (plan/render.py
# `header`), unchanged since the first release: a file without it was not written by us.
OURS = b"# Managed by overlayctl"
# Files read with the others for this record (read-files.sh), whichever OS family.
FILES = (hp.SUBNET_ENV, hp.DOCKER_OPTS_ENV, "/etc/docker/daemon.json", "/etc/sysconfig/flanneld",
         "/etc/default/flanneld")  # fmt: skip
DAEMON_JSON = FILES[2]
# daemon.json keys that set what the agent's flags set (dockerd refuses to start when a key is
# both a flag and in the file) or move docker's bridge off the lease.
DAEMON_JSON_NETWORK_KEYS = ("bip", "mtu", "ip-masq", "bridge", "fixed-cidr",
                            "default-address-pools")  # fmt: skip
_RUNNING = ("active", "activating", "reloading", "deactivating")
_ENABLED = ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias")
_ARGV = re.compile(r"argv\[\]=(.*?) ; ignore_errors=")


@dataclass(frozen=True)
class Flanneld:
    """flanneld.service as systemd sees it (fragment "": no such unit)."""

    state: UnitState = field(default_factory=lambda: UnitState("inactive", ""))
    fragment: str = ""
    required_by: tuple[str, ...] = ()
    wanted_by: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state.active in _RUNNING

    @property
    def enabled(self) -> bool:
        return self.state.enabled in _ENABLED


@dataclass(frozen=True)
class DockerUnit:
    """docker.service as systemd runs it: what wins of the vendor unit and every drop-in."""

    exec_start: tuple[tuple[str, ...], ...] = ()  # each ExecStart's argv
    environment_files: tuple[str, ...] = ()  # "-" first: may be missing
    drop_ins: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    binds_to: tuple[str, ...] = ()
    part_of: tuple[str, ...] = ()
    running_args: tuple[str, ...] = ()  # dockerd's argv now (read only on a hand-built host)

    @property
    def bound_to_flanneld(self) -> bool:
        """Stopping flanneld would stop docker (a hand-written RequiredBy=docker.service)."""
        return "flanneld.service" in (*self.requires, *self.binds_to, *self.part_of)


@dataclass(frozen=True)
class DropIn:
    """A drop-in of docker's or etcd's unit that overlayctl did not write."""

    unit: str  # docker | etcd
    path: str
    content: bytes

    @property
    def sorts_after_ours(self) -> bool:
        """systemd reads every folder's drop-ins sorted by file name together, the last name
        winning per setting: `override.conf` (systemctl edit) beats `overlayctl.conf`."""
        return self.path.rsplit("/", 1)[-1] > hp.DOCKER_DROPIN.rsplit("/", 1)[-1]

    @property
    def settings(self) -> tuple[str, ...]:
        """The settings it assigns, in order (ExecStart, EnvironmentFile, ...)."""
        lines = (
            x.strip().partition("=") for x in self.content.decode(errors="replace").splitlines()
        )
        return tuple(dict.fromkeys(k.strip() for k, sep, _ in lines if sep and k[:1] not in "#;"))


@dataclass(frozen=True)
class Device:
    """A flannel device: flannel0/flannelN (flanneld's udp TUN) or flannel.N (vxlan)."""

    name: str
    kind: str  # tun | vxlan | other
    persistent: bool | None = None  # TUN only: flanneld's own vanishes with it, a kept one not


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    restart: str  # docker's restart policy name ("no": it stays down after a docker restart)
    started_at: str
    pid: int
    ip: str  # on docker's bridge ("" on another network)


@dataclass(frozen=True)
class HostHandBuilt:
    """One host's side of a hand-built cluster."""

    flanneld: Flanneld = field(default_factory=Flanneld)
    docker: DockerUnit = field(default_factory=DockerUnit)
    drop_ins: tuple[DropIn, ...] = ()
    daemon_json_keys: tuple[str, ...] = ()  # DAEMON_JSON_NETWORK_KEYS set in daemon.json
    devices: tuple[Device, ...] = ()
    routes: tuple[str, ...] = ()  # device routes into the Network (`ip route` lines)
    subnet_env: dict[str, str] | None = None  # /run/flannel/subnet.env (None: absent)
    docker_opts: dict[str, str] | None = None  # /run/flannel/docker (None: absent)
    flanneld_env: tuple[str, ...] = ()  # flanneld's env files present and not ours
    etcd_conf_foreign: bool = False  # /etc/etcd/etcd.conf exists without our header line
    etcd_has_data: bool = False  # ... and the data dir it names holds a member
    containers: tuple[Container, ...] = ()

    @property
    def late_drop_ins(self) -> tuple[DropIn, ...]:
        """Hand-made drop-ins that override ours (sort after it)."""
        return tuple(d for d in self.drop_ins if d.sorts_after_ours)

    def signs(self) -> list[str]:
        """What on this host alone makes it hand-built (adopt.md 2.5 (a) and (c))."""
        found = []
        if self.flanneld.running or self.flanneld.enabled:
            found.append(f"flanneld.service {'active' if self.flanneld.running else 'enabled'}")
        if self.etcd_conf_foreign and self.etcd_has_data:
            found.append("etcd.conf not written by overlayctl")
        return found


@dataclass(frozen=True)
class Member:
    id: str  # hex, as etcdctl's table prints it
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


@dataclass(frozen=True)
class OldLease:
    """A flanneld lease in the v2 API (ttl None: no expiry, a reservation)."""

    subnet: str
    public_ip: str
    ttl: int | None


@dataclass(frozen=True)
class V2Found:
    """flanneld's v2 keys under the inventory's prefix, as overlayctl/etcd/v2.py read them."""

    keys: int = 0  # keys and directories under the prefix, the prefix's own included
    config_key: str = ""
    config: str | None = None  # the config's text, None when absent
    leases: tuple[OldLease, ...] = ()
    error: str = ""  # why they could not be read ("": they were, or v2 is off)

    def sign(self) -> str:
        """(b) of adopt.md 2.5: what of flanneld's is in the v2 API ("": nothing)."""
        if self.config is not None:
            return f"{self.config_key} in the v2 API"
        return f"{self.keys} keys under the prefix in the v2 API" if self.keys else ""


@dataclass(frozen=True)
class EtcdFound:
    """The etcd running on the member read through, as etcd-found.sh found it."""

    client_url: str = ""  # "" when no etcd runs there
    members: tuple[Member, ...] | None = None  # None: not read (members_error says why)
    members_error: str = ""
    peer_listen: tuple[str, ...] = ()  # the peer URLs it listens on (ETCD_LISTEN_PEER_URLS)
    v2_exit: int | None = None  # etcd_v2_dump.py's exit code (None: not run, v2 is off)
    v2_text: str = ""  # its output, for overlayctl/etcd/v2_remote.py's parse_read
    version: str = ""  # the running etcd's own, e.g. 3.4.23 ("": not read)


@dataclass(frozen=True)
class HandBuilt:
    """The whole cluster: each host's facts, and etcd as read through VIA (the first member)."""

    hosts: dict[str, HostHandBuilt] = field(default_factory=dict)
    etcd: EtcdFound = field(default_factory=EtcdFound)
    v2: V2Found = field(default_factory=V2Found)
    via: str = ""  # the member etcd was read through ("": none was)
    via_address: str = ""  # its address

    def cluster_signs(self) -> list[str]:
        """What etcd says (adopt.md 2.5 (b) and (d)). (d) is read as the state issue 21 left:
        the member list records a peer URL for the member read through that its etcd does not
        listen on (etcd.conf rewritten to https, the membership still http): a scheme unlike
        the inventory's on a cluster overlayctl made is a cluster.tls change, which init
        refuses by itself (plan/config_change.py), naming its runbook."""
        found = [self.v2.sign()] if self.v2.sign() else []
        listen = self.etcd.peer_listen  # () when not read: nothing to compare with
        urls = [(m.name, url) for m in self.etcd.members or () for url in m.peer_urls
                if urllib.parse.urlsplit(url).hostname == self.via_address]  # fmt: skip
        found += [
            f"etcd's member list has {url} for {name}, which its etcd does not listen on"
            for name, url in urls
            if listen and not any(_serves(x, url) for x in listen)
        ]
        return found

    @property
    def found(self) -> bool:
        return bool(self.cluster_signs() or any(h.signs() for h in self.hosts.values()))

    def refusal(self) -> str | None:
        """init's one line when the cluster was built by hand (adopt.md 2.5), else None."""
        signed = [name for name, h in self.hosts.items() if h.signs()]
        cluster = self.cluster_signs()
        if not signed and not cluster:
            return None
        who = signed[0] if signed else self.via
        why = [*(self.hosts[who].signs() if who in self.hosts else []), *cluster]
        if len(signed) > 1:
            why.append(f"the same on {', '.join(signed[1:])}")
        return (
            f"{who}: this cluster was built by hand ({'; '.join(why)}): run 'overlayctl adopt' "
            "(docs/runbooks/adopt.md), which keeps every subnet and container address"
        )


def parse_host(facts_text: str, facts: Facts, files: dict[str, RemoteFile]) -> HostHandBuilt:
    """facts.sh's output (its unitprop=, link=, route=, dropin=, docker_arg= and container=
    lines; FACTS, the rest of it, parsed) and the FILES read with it -> the host's record."""
    props: dict[str, dict[str, list[str]]] = {}
    lines: dict[str, list[str]] = {}
    for line in facts_text.splitlines():
        key, sep, value = line.partition("=")
        if key == "unitprop":
            unit, _, prop = value.partition(" ")
            name, _, setting = prop.partition("=")
            props.setdefault(unit, {}).setdefault(name, []).append(setting)
        elif sep:
            lines.setdefault(key, []).append(value)
    etcd_active = facts.units.get("etcd", UnitState("", "")).active in _RUNNING
    return HostHandBuilt(
        flanneld=_flanneld(facts.units.get("flanneld"), props.get("flanneld", {})),
        docker=_docker(props.get("docker", {}), lines.get("docker_arg", [])),
        drop_ins=tuple(_drop_in(v) for v in lines.get("dropin", [])),
        daemon_json_keys=_daemon_json_keys(files.get(DAEMON_JSON)),
        devices=tuple(_device(v) for v in lines.get("link", [])),
        routes=tuple(v.strip() for v in lines.get("route", [])),
        subnet_env=_env(files.get(hp.SUBNET_ENV)),
        docker_opts=_env(files.get(hp.DOCKER_OPTS_ENV)),
        flanneld_env=tuple(path for path in FILES[3:] if _foreign(files.get(path))),
        etcd_conf_foreign=_foreign(files.get(hp.ETCD_CONF)),
        etcd_has_data=_has_data(files.get(hp.ETCD_CONF), facts.etcd_data_dirs, etcd_active),
        containers=tuple(c for c in map(_container, lines.get("container", [])) if c),
    )


def parse_etcd(text: str) -> EtcdFound:
    """etcd-found.sh's lines -> what etcd answered; never raises (it only informs a decision)."""
    found = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    if "client_url" not in found:
        return EtcdFound()
    members, error = _members(found.get("members_exit", ""), found.get("members", ""))
    v2_exit = found.get("v2_exit", "")
    listen = tuple(u.strip() for u in found.get("peer_listen", "").split(",") if u.strip())
    return EtcdFound(found["client_url"], members, error, listen,
                     int(v2_exit) if v2_exit.isdigit() else None, found.get("v2", ""),
                     found.get("version", "").strip())  # fmt: skip


def _serves(listen: str, url: str) -> bool:
    """Whether a listener on LISTEN (e.g. http://0.0.0.0:2380) answers at URL."""
    have, want = urllib.parse.urlsplit(listen), urllib.parse.urlsplit(url)
    anywhere = have.hostname in ("0.0.0.0", "::", None)  # noqa: S104 - read, never bound
    return (have.scheme, have.port) == (want.scheme, want.port) and (
        anywhere or have.hostname == want.hostname
    )


def _flanneld(state: UnitState | None, props: dict[str, list[str]]) -> Flanneld:
    return Flanneld(
        state or UnitState("inactive", ""),
        (props.get("FragmentPath") or [""])[0],
        tuple(_words(props, "RequiredBy")),
        tuple(_words(props, "WantedBy")),
    )


def _docker(props: dict[str, list[str]], args: list[str]) -> DockerUnit:
    return DockerUnit(
        exec_start=tuple(
            tuple(found.split()) for v in props.get("ExecStart", []) for found in _ARGV.findall(v)
        ),
        environment_files=tuple(
            ("" if v.endswith("(ignore_errors=no)") else "-") + v.rsplit(" (", 1)[0]
            for v in props.get("EnvironmentFiles", [])
            if v
        ),
        drop_ins=tuple(_words(props, "DropInPaths")),
        requires=tuple(_words(props, "Requires")),
        binds_to=tuple(_words(props, "BindsTo")),
        part_of=tuple(_words(props, "PartOf")),
        running_args=tuple(args),
    )


def _words(props: dict[str, list[str]], name: str) -> list[str]:
    return [word for value in props.get(name, []) for word in value.split()]


def _drop_in(value: str) -> DropIn:
    path, _, data = value.partition(" ")
    unit = path.rsplit("/", 2)[-2].removesuffix(".service.d")
    return DropIn(unit, path, base64.b64decode(data))


def _device(line: str) -> Device:
    name = line.split(": ", 2)[1].split("@", 1)[0]
    if " vxlan id " in line:
        return Device(name, "vxlan")
    if " tun type tun " in line:
        persist = re.search(r" persist (on|off)", line)
        return Device(name, "tun", persist.group(1) == "on" if persist else None)
    return Device(name, "other")


def _container(value: str) -> Container | None:
    parts = value.split(" ", 5)
    if len(parts) < 5:
        return None
    cid, name, restart, started, pid, *ip = parts
    return Container(cid, name.lstrip("/"), restart, started, int(pid) if pid.isdigit() else 0,
                     (ip or [""])[0].strip())  # fmt: skip


def _foreign(file: RemoteFile | None) -> bool:
    return file is not None and file.content is not None and not file.content.startswith(OURS)


def _env(file: RemoteFile | None) -> dict[str, str] | None:
    """An env-style file (KEY=VALUE, quotes stripped) -> its settings; None when absent."""
    if file is None or file.content is None:
        return None
    return env_settings(file.content.decode(errors="replace"))


def _has_data(conf: RemoteFile | None, data_dirs: frozenset[str], etcd_active: bool) -> bool:
    """Whether the etcd CONF configures holds a member: its ETCD_DATA_DIR among DATA_DIRS (the
    ones under /var/lib/etcd facts.sh found), or, for a data dir elsewhere, etcd running."""
    data_dir = (_env(conf) or {}).get("ETCD_DATA_DIR", "")
    if not data_dir:
        return bool(data_dirs)
    if data_dir.rstrip("/") in data_dirs:
        return True
    return etcd_active and not data_dir.startswith(hp.ETCD_DATA_ROOT + "/")


def _daemon_json_keys(file: RemoteFile | None) -> tuple[str, ...]:
    if file is None or file.content is None:
        return ()
    try:
        doc = json.loads(file.content)
    except ValueError:
        return ("(unreadable JSON)",)
    return tuple(k for k in DAEMON_JSON_NETWORK_KEYS if isinstance(doc, dict) and k in doc)


def _members(code: str, text: str) -> tuple[tuple[Member, ...] | None, str]:
    """`etcdctl member list -w json`'s exit code and output -> the members, or None and why."""
    if code != "0":
        return None, f"member list: {text.strip()[-300:] or 'exit ' + code}"
    try:
        return tuple(
            Member(f"{int(m['ID']):x}", str(m.get("name", "")), tuple(m.get("peerURLs") or ()),
                   tuple(m.get("clientURLs") or ()))
            for m in json.loads(text)["members"]
        ), ""  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"member list: unreadable answer ({exc})"
