"""Moving a running etcd cluster's peer URLs from plain http to TLS, keeping quorum, members and
data (adopt's PeerTls, docs/design/adopt.md 3.1). Pure: what the cluster is like now in, the one
next step out; peer_tls_drive.drive repeats observe -> step -> carry out through an executor
(SSH for the phase, local processes for the tests), so a run cut anywhere resumes from what it
finds.

Why it goes in rounds: a member's peer URL changes only by `member update` (a restarted member
ignores --initial-advertise-peer-urls once it has data), and http and https cannot share a port.
So every member first listens on http:2380 and https:<tmp> (R1, `peers_dual`), the membership
moves to https:<tmp> (U1), every member listens on https:2380 and https:<tmp> (R2,
`peers_tls_temp`), and the membership moves to https:2380 (U2). init's Etcd phase (R3) then drops
the temporary listener and turns clients to https.

The invariant every step keeps: each member listens on every peer URL the membership records
for it, and no recorded URL turns https before every member runs with its peer certificate (the
dialing side needs it). A member that breaks it (down, or started from a file of another round)
is repaired first.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from overlayctl import paths as hp

DEFAULT_TEMP_PORT = 2382  # 2381: kubeadm's etcd metrics; 2379/2380: etcd's own
_RESERVED = {hp.ETCD_CLIENT_PORT, hp.ETCD_PEER_PORT, hp.ETCD_LEGACY_CLIENT_PORT}

Url = tuple[str, int]  # (scheme, port): a member listens on its own address only


@dataclass(frozen=True)
class Ports:
    """The peer port every member ends on, and the temporary https one of the rounds."""

    peer: int = hp.ETCD_PEER_PORT
    temp: int = DEFAULT_TEMP_PORT


class Stage(enum.Enum):
    """What a member's peer listener serves (its etcd.conf, or the running process)."""

    HTTP = "http"  # the runbook's: http:2380
    DUAL = "peers_dual"  # R1: http:2380 and https:<tmp>, with the peer certificate
    TLS_TEMP = "peers_tls_temp"  # R2: https:2380 and https:<tmp>
    TLS = "final"  # R3 (init's Etcd): https:2380

    def serves(self, ports: Ports) -> frozenset[Url]:
        peer, temp = ports.peer, ports.temp
        return {
            Stage.HTTP: frozenset({("http", peer)}),
            Stage.DUAL: frozenset({("http", peer), ("https", temp)}),
            Stage.TLS_TEMP: frozenset({("https", peer), ("https", temp)}),
            Stage.TLS: frozenset({("https", peer)}),
        }[self]

    @property
    def has_peer_tls(self) -> bool:
        """Started with the peer certificate: it can dial a peer's https URL."""
        return self is not Stage.HTTP


@functools.cache  # a handful of distinct texts per run, parsed on every step
def parse_urls(text: str) -> frozenset[Url]:
    """`http://10.0.0.1:2380,https://10.0.0.1:2382` -> {(http, 2380), (https, 2382)}."""
    found = set()
    for item in text.split(","):
        if item.strip():
            parts = urlsplit(item.strip())
            default = 443 if parts.scheme == "https" else 80
            found.add((parts.scheme, parts.port or default))
    return frozenset(found)


def classify(listen_peer_urls: str | None, ports: Ports) -> Stage | None:
    """The stage whose listener LISTEN_PEER_URLS is (None: none of ours, or no value)."""
    if listen_peer_urls is None:
        return None
    urls = parse_urls(listen_peer_urls)
    return next((s for s in Stage if s.serves(ports) == urls), None)


@dataclass(frozen=True)
class MemberView:
    """One member as observed: membership (ID, name, recorded peer URLs), its host, and the
    peer listener of its etcd.conf and of the running etcd (None: etcd not running)."""

    id: str
    name: str
    address: str
    peer_urls: tuple[str, ...]
    file_peers: str | None  # ETCD_LISTEN_PEER_URLS in its etcd.conf (None: absent)
    running_peers: str | None  # what the running etcd was started with; None: not running
    peer_cert: bool = True  # its peer certificate and key are on the host
    reachable: bool = True  # its host answered (else nothing about it is known)
    taken_ports: frozenset[int] = frozenset()  # TCP ports something listens on there now

    @property
    def recorded(self) -> frozenset[Url]:
        return parse_urls(",".join(self.peer_urls))


class Kind(enum.Enum):
    ROLL = "roll"  # the member's etcd.conf to STAGE (when it differs), then restart it
    FILE = "file"  # only its etcd.conf to STAGE: what runs is right, a restart would not be
    UPDATE = "update"  # `member update ID --peer-urls=URL`
    DONE = "done"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Step:
    kind: Kind
    round: str = ""  # R1, U1, R2, U2, repair
    member: str = ""  # its name
    member_id: str = ""
    stage: Stage | None = None
    write: bool = False  # ROLL: the file changes too (else the file is right, only a restart)
    url: str = ""  # UPDATE: the new peer URL
    reason: str = ""

    def describe(self) -> str:
        """One progress line: `R1: node1: etcd.conf peers_dual, restart`."""
        stage = self.stage.value if self.stage else ""
        what = {
            Kind.ROLL: f"etcd.conf {stage}, restart" if self.write else f"restart ({stage})",
            Kind.FILE: f"etcd.conf {stage} (no restart)",
            Kind.UPDATE: f"member update {self.member_id} --peer-urls={self.url}",
        }.get(self.kind)
        if what is None:
            return f"{self.kind.value}: {self.reason}"
        return f"{self.round}: {self.member}: {what}"


def choose_ports(views: Sequence[MemberView], want: Ports = Ports()) -> Ports:
    """WANT's temporary https peer port, unless an earlier run already uses another one
    (membership, files or running etcd): that one; or, taken on a member's host, the next free
    one on all of them."""
    reserved = _RESERVED | {want.peer}
    for view in views:
        texts = [",".join(view.peer_urls), view.file_peers or "", view.running_peers or ""]
        for scheme, port in parse_urls(",".join(texts)):
            if scheme == "https" and port not in reserved:
                return Ports(want.peer, port)
    taken = set().union(*(v.taken_ports for v in views)) if views else set()
    port = want.temp
    while port in taken or port in reserved:
        port += 1
    return Ports(want.peer, port)


def member_url(view: MemberView, url: Url) -> str:
    return f"{url[0]}://{view.address}:{url[1]}"


def next_step(views: Sequence[MemberView], ports: Ports) -> Step:
    """The one next step for the cluster VIEWS describes (in inventory order)."""
    blocked = _blocked(views, ports)
    if blocked is not None:
        return blocked
    round_one = any(("http", ports.peer) in v.recorded for v in views)
    # Where this round's updates take the members: every member must serve it first.
    dest: Url = ("https", ports.temp) if round_one else ("https", ports.peer)
    target = Stage.DUAL if round_one else Stage.TLS_TEMP
    name = "R1" if round_one else "R2"
    step = _repair(views, ports, target, dest) or _roll_round(views, ports, target, dest, name)
    if step is not None:
        return step
    old: Url = ("http", ports.peer) if round_one else ("https", ports.temp)
    if any(old in v.recorded for v in views):
        return _update(views, old, dest, "U1" if round_one else "U2")
    return Step(Kind.DONE, reason="every member's peer URL is https on the peer port")


def _blocked(views: Sequence[MemberView], ports: Ports) -> Step | None:
    """What no step of ours can change: an unknown member, URLs or listener."""
    for view in views:
        if not view.reachable:
            return Step(Kind.BLOCKED, reason=f"{view.name} cannot be reached: nothing is known")
        urls = view.recorded
        if not urls or not any(urls <= s.serves(ports) for s in Stage):
            return Step(Kind.BLOCKED, reason=f"{view.name}: unexpected peer URLs "
                        f"{','.join(view.peer_urls) or '(none)'} in the membership")  # fmt: skip
        if view.running_peers is not None and classify(view.running_peers, ports) is None:
            return Step(Kind.BLOCKED, reason=f"{view.name}: etcd runs with peer URLs "
                        f"{view.running_peers}, none of this migration's stages")  # fmt: skip
    return None


def _repair(views: Sequence[MemberView], ports: Ports, target: Stage, dest: Url) -> Step | None:
    """The invariant as found: a member whose running etcd breaks it restarts into a stage
    that keeps it; a file of ours that would break it at the next (re)start is rewritten."""
    any_https = any(scheme == "https" for v in views for scheme, _ in v.recorded)
    for view in views:
        if not _fits(view, classify(view.running_peers, ports), ports, any_https):
            file = classify(
                view.file_peers, ports
            )  # what it ran last, most likely: kept if it fits
            return _roll(
                view,
                file
                if _fits(view, file, ports, any_https)
                else _stage_for(view, target, dest, ports),
                ports,
                "repair",
                "its running etcd does not serve the URLs the membership records",
            )
    for view in views:
        running, file = classify(view.running_peers, ports), classify(view.file_peers, ports)
        if running is not Stage.HTTP and not _fits(view, file, ports, any_https):
            return Step(
                Kind.FILE,
                "repair",
                view.name,
                view.id,
                running,
                write=True,
                reason="its etcd.conf would not serve its recorded URLs at a restart",
            )
    return None


def _roll_round(
    views: Sequence[MemberView], ports: Ports, target: Stage, dest: Url, name: str
) -> Step | None:
    """The round's restarts: every member into a stage that serves DEST (the round's updates
    come after), one at a time; then every file as what runs."""
    for view in views:
        if classify(view.running_peers, ports) not in _acceptable(view, dest, ports):
            return _roll(
                view,
                _stage_for(view, target, dest, ports),
                ports,
                name,
                f"every member serves {dest[0]}:{dest[1]} before the updates",
            )
    for view in views:
        if classify(view.file_peers, ports) not in _acceptable(view, dest, ports):
            return Step(Kind.FILE, name, view.name, view.id, classify(view.running_peers, ports),
                        write=True, reason="its etcd.conf is not what runs")  # fmt: skip
    return None


def _fits(view: MemberView, stage: Stage | None, ports: Ports, any_https: bool) -> bool:
    """A member listening as STAGE serves its recorded URLs, and dials https where needed."""
    if stage is None:
        return False
    return view.recorded <= stage.serves(ports) and (stage.has_peer_tls or not any_https)


def _needed(view: MemberView, dest: Url) -> frozenset[Url]:
    return view.recorded | {dest}


def _acceptable(view: MemberView, dest: Url, ports: Ports) -> set[Stage]:
    """The stages a member may run in during the round whose updates go to DEST: with its
    peer certificate, serving its recorded URLs and DEST."""
    return {s for s in Stage if s.has_peer_tls and _needed(view, dest) <= s.serves(ports)}


def _stage_for(view: MemberView, target: Stage, dest: Url, ports: Ports) -> Stage:
    """TARGET when it is acceptable, else the first stage that is."""
    fits = _acceptable(view, dest, ports)
    return target if target in fits else next(s for s in Stage if s in fits)


def _roll(view: MemberView, stage: Stage, ports: Ports, round_name: str, reason: str) -> Step:
    if not view.peer_cert:
        return Step(Kind.BLOCKED, reason=f"{view.name}: its peer certificate is not on the host "
                    "(PushPki first)")  # fmt: skip
    write = classify(view.file_peers, ports) is not stage
    return Step(Kind.ROLL, round_name, view.name, view.id, stage, write, reason=reason)


def _update(views: Sequence[MemberView], old: Url, new: Url, round_name: str) -> Step:
    view = next(v for v in views if old in v.recorded)
    return Step(
        Kind.UPDATE,
        round_name,
        view.name,
        view.id,
        url=member_url(view, new),
        reason=f"{view.name} serves {new[0]}:{new[1]} (every member runs peer TLS)",
    )
