"""adopt's PeerTls: a hand-built cluster's etcd peers from plain http to TLS, member by member,
keeping quorum, member IDs and data (docs/design/adopt.md 3.1). etcd/peer_tls.py decides each
step from what the members are now; this module observes them and carries the steps out over
SSH, so a run cut anywhere (or a failed one) resumes from what the next run finds.

What a member is "now" is read from the running etcd itself (/proc/<MainPID>/environ and its
command line): a file written but not yet restarted is told apart from one that runs. Health is
asked at the client URL each member serves now (plain http during these rounds), never at the
inventory's https ones, which nothing answers yet.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster, etcdctl, peer_tls, peer_tls_drive
from overlayctl.etcd.peer_tls import MemberView, Ports, Stage
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.base import Rollout
from overlayctl.phases.etcd import restart_etcd
from overlayctl.plan.facts import env_settings
from overlayctl.plan.render import etcd_conf
from overlayctl.remote.ssh import BACKUP_ROOT, Remote, RunResult

# The running etcd's listeners: from its environment (EnvironmentFile) and its command line
# (a flag wins). Exit 3: etcd is not running.
_RUNNING = r"""pid=$(systemctl show -p MainPID --value etcd 2>/dev/null)
[ "${pid:-0}" -gt 0 ] 2>/dev/null || exit 3
tr '\0' '\n' < /proc/$pid/environ | grep -E '^ETCD_LISTEN_(PEER|CLIENT)_URLS=' || true
tr '\0' '\n' < /proc/$pid/cmdline | sed 's/^/ARG=/'"""
_CERT = 'test -s "$1" && test -s "$2"'
# Can this host open a TCP connection to $1:$2? (python3: every host the agent runs on has it;
# without it, no answer either way: exit 0.)
_CONNECT = (
    "command -v python3 >/dev/null || exit 0\n"
    "exec python3 -c 'import socket, sys; "
    'socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)\' "$1" "$2"'
)
_ETCD_DEFAULTS = {"peer": "http://localhost:2380", "client": "http://localhost:2379"}


@dataclass(frozen=True)
class Found:
    """One member's host as observed: its etcd.conf, what its etcd runs with, and more."""

    file: bytes | None
    running: dict[str, str] | None  # peer/client -> listen URLs; None: etcd not running
    taken: frozenset[int]
    peer_cert: bool


def read_running(out: RunResult) -> dict[str, str] | None:
    """_RUNNING's output -> {"peer": URLs, "client": URLs} (etcd's defaults where unset)."""
    if out.code == 3:
        return None
    found = dict(_ETCD_DEFAULTS)
    args = [line[4:] for line in out.stdout.splitlines() if line.startswith("ARG=")]
    for line in out.stdout.splitlines():
        for kind in ("peer", "client"):
            if line.startswith(f"ETCD_LISTEN_{kind.upper()}_URLS="):
                found[kind] = line.split("=", 1)[1].strip('"')
    for i, arg in enumerate(args):
        for kind in ("peer", "client"):
            flag = f"--listen-{kind}-urls"
            if arg.startswith(flag + "="):
                found[kind] = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(args):
                found[kind] = args[i + 1]
    return found


def file_value(content: bytes | None, key: str) -> str | None:
    """KEY's value in an env-style etcd.conf (None: absent)."""
    return env_settings((content or b"").decode(errors="replace")).get(key)


def listening_ports(ss_output: str) -> frozenset[int]:
    """`ss -ltnH` -> the TCP ports something listens on."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return frozenset(ports)


class SshExecutor:
    """peer_tls_drive.Executor over the rollout's SSH connections."""

    def __init__(self, rollout: Rollout, title: str) -> None:
        self.rollout, self.inv, self.title = rollout, rollout.inv, title
        self.members = list(rollout.inv.etcd_members)
        self.found: dict[str, Found] = {}
        self.endpoints: dict[str, str] = {}  # member -> the client URL it serves now
        self._written: dict[str, bytes | None] = {}  # this step's previous etcd.conf

    # -- looking ---------------------------------------------------------------------------------
    def remote(self, name: str) -> Remote:
        remote = self.rollout.session.remotes.get(name)
        if remote is None:
            raise OverlayctlError(f"{name}: not reachable over SSH")
        return remote

    def look(self, host: Host) -> Found:
        results = self.remote(host.name).batch(
            [
                (["cat", hp.ETCD_CONF], f"cat {hp.ETCD_CONF}"),
                (["sh", "-c", _RUNNING], "sh -c <etcd's listeners>"),
                (["ss", "-ltnH"], "ss -ltnH"),
                (["sh", "-c", _CERT, "sh", hp.ETCD_PEER_CERT, hp.ETCD_PEER_KEY], "peer cert?"),
            ],
            waiting_for="etcd's state",
        )
        cat, running, ss, cert = results
        return Found(cat.stdout.encode() if cat.code == 0 else None, read_running(running),
                     listening_ports(ss.stdout), cert.code == 0)  # fmt: skip

    def observe(self) -> list[MemberView]:
        self.found, unreachable = {}, []
        for host in self.members:
            try:
                self.found[host.name] = self.look(host)
            except OverlayctlError:
                unreachable.append(host.name)
        self.endpoints = {h.name: self._client_url(h) for h in self.members}
        listed = {m.name: m for m in self._member_list()}
        strangers = sorted(set(listed) - {h.name for h in self.members})
        if strangers or set(listed) < {h.name for h in self.members}:
            missing = sorted({h.name for h in self.members} - set(listed))
            raise OverlayctlError(
                f"etcd's members ({', '.join(sorted(listed))}) are not the inventory's etcd "
                f"hosts: not in the inventory {strangers or '-'}, not members {missing or '-'}"
            )
        views = []
        for host in self.members:
            found, member = self.found.get(host.name), listed[host.name]
            views.append(MemberView(
                id=member.id, name=host.name, address=str(host.address),
                peer_urls=tuple(member.peer_urls),
                file_peers=file_value(found.file, "ETCD_LISTEN_PEER_URLS") if found else None,
                running_peers=found.running["peer"] if found and found.running else None,
                peer_cert=bool(found and found.peer_cert), reachable=found is not None,
                taken_ports=found.taken if found else frozenset(),
            ))  # fmt: skip
        return views

    def _client_url(self, host: Host) -> str:
        """HOST's client URL at the scheme its etcd serves now (its file's, when it is down)."""
        found = self.found.get(host.name)
        urls = (found.running or {}).get("client") if found else None
        urls = urls or (file_value(found.file, "ETCD_LISTEN_CLIENT_URLS") if found else None)
        scheme = "https" if (urls or "").startswith("https") else "http"
        return f"{scheme}://{host.address}:{hp.ETCD_CLIENT_PORT}"

    def _view_inv(self) -> Inventory:
        """The inventory as etcdctl must see the cluster now: TLS options only when a member
        serves https (before PushPki a host may have no admin certificate)."""
        tls = any(url.startswith("https") for url in self.endpoints.values())
        return dataclasses.replace(self.inv, cluster=dataclasses.replace(self.inv.cluster, tls=tls))

    def _anchor(self) -> Remote:
        """A member whose etcdctl talks to the cluster (any: etcdctl dials every endpoint)."""
        running = [h for h in self.members if (f := self.found.get(h.name)) and f.running]
        return self.remote((running or self.members)[0].name)

    def _etcdctl(self, *args: str) -> RunResult:
        argv = [*etcdctl.base_argv(self._view_inv(), list(self.endpoints.values())), *args]
        return self._anchor().run(argv, check=False, timeout=60)

    def _member_list(self) -> list[etcdctl.MemberInfo]:
        got = self._etcdctl("member", "list", "-w", "json")
        if got.code != 0:
            raise OverlayctlError(f"etcd member list failed: {cluster.last_line(got.stderr)}")
        return etcdctl.parse_members(got.stdout)

    # -- acting ----------------------------------------------------------------------------------
    def _host(self, name: str) -> Host:
        return next(h for h in self.members if h.name == name)

    def write(self, member: str, stage: Stage, ports: Ports) -> None:
        found = self.found.get(member)
        self._written[member] = found.file if found else None
        content = etcd_conf(self.inv, self._host(member), stage.value, ports.temp)
        self.remote(member).put_files([(hp.ETCD_CONF, content, hp.MODE_FILE, "root:root")])

    def restart(self, member: str) -> None:
        restart_etcd(self.remote(member), wait=True)
        # Clients stay on plain http in every stage of these rounds.
        self.endpoints[member] = f"http://{self._host(member).address}:{hp.ETCD_CLIENT_PORT}"

    def wait_healthy(self, member: str) -> float:
        timeout = self.rollout.options.etcd_timeout
        return cluster.wait_healthy(self._anchor(), self._view_inv(), timeout,
                                    endpoints=self.endpoints)  # fmt: skip

    def rollback(self, view: MemberView, ports: Ports) -> None:
        """The etcd.conf this step replaced (else: the one of what ran, ours rendered again or
        the hand-built original from the backups), then a restart if it ran before."""
        remote = self.remote(view.name)
        previous = self._written.pop(view.name, None)
        if previous is None:
            stage = peer_tls.classify(view.running_peers, ports)
            if stage in (Stage.DUAL, Stage.TLS_TEMP):
                previous = etcd_conf(self.inv, self._host(view.name), stage.value, ports.temp)
            else:
                backup = remote.run(["cat", BACKUP_ROOT + hp.ETCD_CONF], check=False)
                previous = backup.stdout.encode() if backup.code == 0 else None
        if previous is None:
            raise OverlayctlError(f"{view.name}: no earlier etcd.conf to put back")
        remote.put_files([(hp.ETCD_CONF, previous, hp.MODE_FILE, "root:root")])
        if view.running_peers is not None:
            restart_etcd(remote, wait=True)

    def update(self, member_id: str, url: str) -> None:
        """`member update`, retried while etcd calls the cluster unhealthy (as members.add)."""
        deadline = time.monotonic() + 30
        while True:
            got = self._etcdctl("member", "update", member_id, f"--peer-urls={url}")
            if got.code == 0:
                return
            if "unhealthy cluster" not in got.stderr or time.monotonic() > deadline:
                raise OverlayctlError(
                    f"etcd refused member update {member_id} -> {url}: "
                    f"{cluster.last_line(got.stderr)}"
                )
            time.sleep(1)

    def unreachable(self, url: str, member: str) -> list[str]:
        parts = urlsplit(url)
        cut_off = []
        for host in self.members:
            if host.name != member:
                got = self.remote(host.name).run(
                    ["sh", "-c", _CONNECT, "sh", str(parts.hostname), str(parts.port)],
                    check=False, timeout=30, log_as=f"connect {parts.hostname} {parts.port}",
                )  # fmt: skip
                if got.code != 0:
                    cut_off.append(host.name)
        return cut_off

    def say(self, line: str) -> None:
        self.rollout.say("cluster", self.title, line)


@dataclass
class PeerTls:
    """The rounds R1, U1, R2, U2 (etcd/peer_tls.py); done when every member's peer URL is
    https:2380 (init's Etcd phase then drops the temporary listener: R3). WANT: the ports."""

    want: Ports = dataclasses.field(default_factory=Ports)
    title: str = "peer-tls"

    def should_run(self, rollout: Rollout) -> bool:
        return rollout.inv.cluster.tls

    def run(self, rollout: Rollout) -> None:
        lost = [m.name for m in rollout.inv.etcd_members if m.name not in rollout.session.remotes]
        if lost:  # nothing is known about them: no step could be proven safe
            raise OverlayctlError(
                f"{self.title}: etcd members not reachable: {', '.join(lost)}; nothing changed"
            )
        started = time.monotonic()
        done = peer_tls_drive.drive(SshExecutor(rollout, self.title), self.want)
        for name, took in done.by_round().items():
            rollout.report.took(f"{self.title} {name}", took)
        if not done.steps:
            rollout.say("cluster", self.title, "every member's peer URL is https already")
            return
        rounds = ", ".join(f"{k} {v:.1f} s" for k, v in done.by_round().items())
        rollout.say("cluster", self.title, f"peers on https in {time.monotonic() - started:.1f} "
                    f"s, {len(done.steps)} steps ({rounds})")  # fmt: skip
