"""Snapshot + watch + reconcile over ``<prefix>/subnets/``, driving a data plane's peer sink.

Read the leases and the allow-list in one snapshot (agent/subnet/snapshot.py; the first one is
the agent's start snapshot, so starting costs no extra read), hand the sink the full set of
remote leases, then watch the leases and the allow-list key from revision + 1 and apply each
change. When a watch breaks (etcd restarted, endpoint lost) or the revision was compacted:
read one snapshot again, emit only the difference, resume: one re-read per break, never one per
event (an allow-list read per batch of events cost 33 requests per agent at start with 100
agents). Waits between attempts grow (bounded), so a broken etcd never makes this loop spin
(flannel #2470). The loop knows nothing about the backend behind the sink.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from agent.etcd import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    KeyRange,
    KeyValue,
    WatchEvent,
    WatchStream,
)
from agent.subnet.allowlist import AllowList
from agent.subnet.layout import Lease, LeaseDecodeError, decode_lease, subnets_dir
from agent.subnet.snapshot import PrefixSnapshot, read_snapshot

log = logging.getLogger(__name__)


class PeerSink(abc.ABC):
    """What a data plane implements to follow the remote leases (one per backend)."""

    @abc.abstractmethod
    def add_peer(self, lease: Lease) -> None:
        """A new remote lease."""

    @abc.abstractmethod
    def remove_peer(self, lease: Lease) -> None:
        """A remote lease that is gone (deleted or expired)."""

    def replace_peer(self, old: Lease, new: Lease) -> None:
        """A remote lease whose attributes (PublicIP, backend data) changed."""
        self.remove_peer(old)
        self.add_peer(new)

    def flush(self) -> None:  # noqa: B027 - optional: most sinks have nothing to batch
        """The end of a batch of calls: apply what is cheaper done once per batch."""

    def sync_peers(self, leases: Sequence[Lease]) -> None:
        """The complete set of remote leases (first snapshot). Override to also drop stale
        state left by a previous run; by default each lease is added."""
        for lease in leases:
            self.add_peer(lease)


class Backoff:
    """Exponential waits between ``initial`` and ``maximum`` seconds."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        """The wait to use now; the following one doubles (bounded)."""
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class SubnetWatcher:
    """Keeps ``sink`` in step with every remote lease; run it with :meth:`start`."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        sink: PeerSink,
        own_subnet: Callable[[], IPv4Network | None] = lambda: None,
        *,
        on_own_event: Callable[[KeyValue | None], None] | None = None,
        own_public_ip: IPv4Address | None = None,
        poll_timeout: float = 0.5,
        backoff: Backoff | None = None,
        allowlist: AllowList | None = None,
        allowlist_interval: float = 60.0,
        snapshot: PrefixSnapshot | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.directory = subnets_dir(prefix)
        self._snapshot = snapshot  # the first one, already read (the agent's start snapshot)
        self._allow_watch: WatchStream | None = None
        self.sink = sink
        self.own_subnet = own_subnet
        self.on_own_event = on_own_event
        # A lease with our PublicIP is never a peer: while we move to a new subnet, its watch
        # event can arrive before own_subnet() knows it (a route to ourselves otherwise).
        self.own_public_ip = own_public_ip
        self.poll_timeout = poll_timeout
        self.backoff = backoff or Backoff()
        self.peers: dict[str, Lease] = {}  # key -> last good lease the sink has (remote only)
        # Every remote lease, admitted by the allow-list or not (re-judged when it changes).
        self.remote: dict[str, Lease] = {}
        self.allowlist = allowlist
        self.allowlist_interval = allowlist_interval
        self._allowlist_next = 0.0
        self.revision = 0
        self.synced = threading.Event()  # set after the first snapshot reached the sink
        self.stats = {"relists": 0, "events": 0, "errors": 0, "compactions": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="subnet-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (within ``poll_timeout`` plus one etcd call)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        """List, watch, and on any failure wait (bounded backoff), re-list and resume."""
        while not self._stop.is_set():
            stream: WatchStream | None = None
            started = time.monotonic()
            try:
                self._relist()
                stream = self.client.watch_prefix(self.directory, self.revision + 1)
                self._watch_allowlist()
                started = time.monotonic()
                self._follow(stream)
            except EtcdCompacted as exc:
                self.stats["compactions"] += 1
                log.warning("watch of %s: %s; re-listing", self.directory, exc)
            except EtcdError as exc:
                self.stats["errors"] += 1
                log.warning("watch of %s broke: %s; re-listing", self.directory, exc)
            finally:
                if stream is not None:
                    stream.cancel()
                allow, self._allow_watch = self._allow_watch, None
                if allow is not None:
                    allow.cancel()
            if stream is not None and time.monotonic() - started > self.backoff.maximum:
                self.backoff.reset()  # it had been healthy for a while: start small again
            self._stop.wait(self.backoff.next())

    def _follow(self, stream: WatchStream) -> None:
        while not self._stop.is_set():
            batch = stream.get(timeout=self.poll_timeout)
            if self._allowlist_changed():
                self.reconcile(self._admitted())
            if batch is None:
                continue
            self.apply(batch)
            self.backoff.reset()

    # -- the allow-list ------------------------------------------------------------------------

    def _watch_allowlist(self) -> None:
        """Watch the allow-list key from the snapshot on (one key: the host role may read
        it); if etcd refuses, the key is read every allowlist_interval instead."""
        if self.allowlist is None:
            return
        self._allowlist_next = time.monotonic() + self.allowlist_interval
        try:
            self._allow_watch = self.client.watch(KeyRange(self.allowlist.key), self.revision + 1)
        except EtcdError as exc:
            log.warning("cannot watch %s (%s): reading it every %gs", self.allowlist.key, exc,
                        self.allowlist_interval)  # fmt: skip

    def _allowlist_changed(self) -> bool:
        """Apply the allow-list's changes seen by its watch (or its periodic read); True if
        the list in force changed. A broken watch raises EtcdError (re-list and resume)."""
        if self.allowlist is None:
            return False
        if self._allow_watch is None:
            if time.monotonic() < self._allowlist_next:
                return False
            self._allowlist_next = time.monotonic() + self.allowlist_interval
            return self.allowlist.refresh(self.client)
        changed = False
        for _ in range(100):  # bounded drain of what arrived
            events = self._allow_watch.get(timeout=0)
            if events is None:
                break
            for event in events:
                kv = event.kv if event.kind == "put" else None
                changed = self.allowlist.load(kv) or changed
        return changed

    def _admitted(self) -> list[Lease]:
        judge = self.allowlist.judge if self.allowlist is not None else None
        return [x for x in self.remote.values() if judge is None or judge(x)]

    @property
    def refused(self) -> list[Lease]:
        """Remote leases the allow-list refuses now (for /metrics and /readyz)."""
        allow = self.allowlist
        if allow is None:
            return []
        refused = [x for x in self.remote.values() if not allow.admits(x)]
        return sorted(refused, key=lambda x: x.subnet)

    # -- reconcile -----------------------------------------------------------------------------

    def _is_own(self, key: str, lease: Lease | None = None) -> bool:
        if lease is not None and lease.public_ip == self.own_public_ip:
            return True
        own = self.own_subnet()
        if own is None:
            return False
        if lease is not None:
            return lease.subnet == own
        return key.endswith(f"/{own.network_address}-{own.prefixlen}")

    def _decode(self, kv: KeyValue) -> Lease | None:
        try:
            return decode_lease(kv.key, kv.value, kv.lease_id, kv.mod_revision)
        except LeaseDecodeError as exc:
            kept = "keeping the last good value" if kv.key in self.peers else "skipping it"
            log.warning("bad lease value: %s; %s", exc, kept)
            return None

    def _relist(self) -> None:
        snapshot, self._snapshot = self._snapshot, None
        given = snapshot is not None  # the start snapshot, older than our lease by design
        if snapshot is None:
            snapshot = read_snapshot(self.client, self.prefix)
            if self.synced.is_set():
                self.stats["relists"] += 1  # a re-read after a break, not the first sync
        kvs, revision = snapshot.subnets, snapshot.revision
        if self.allowlist is not None:
            self.allowlist.load(snapshot.allowlist)
        own, poke = self.own_subnet(), self.on_own_event
        missing = not any(self._is_own(kv.key) for kv in kvs)
        if not given and own is not None and poke is not None and missing:
            poke(None)  # our key went while the watch was down: check it
        desired: dict[str, Lease] = {}
        for kv in kvs:
            lease = self._decode(kv)
            if lease is None:
                lease = self.remote.get(kv.key)  # undecodable now: keep what we had
            if lease is not None and not self._is_own(kv.key, lease):
                desired[kv.key] = lease
        self.remote = desired
        admitted = self._admitted()
        if not self.synced.is_set():
            self.peers = {x.key: x for x in admitted}
            self._call("sync_peers", admitted)
            self.synced.set()
        else:
            self.reconcile(admitted)
        self.revision = revision
        log.debug("listed %d remote leases at revision %d", len(desired), revision)

    def reconcile(self, desired: Iterable[Lease]) -> None:
        """Bring the sink from what we told it to ``desired``: emit only the differences."""
        wanted = {lease.key: lease for lease in desired}
        for key in sorted(self.peers.keys() - wanted.keys()):
            self._call("remove_peer", self.peers.pop(key))
        for key, lease in sorted(wanted.items()):
            self._put(key, lease)
        self._flush()

    def apply(self, events: Iterable[WatchEvent]) -> None:
        """Apply one batch of watch events."""
        for event in events:
            self.stats["events"] += 1
            self.revision = max(self.revision, event.kv.mod_revision)
            key = event.kv.key
            if event.kind == "delete":
                if self._is_own(key) and self.on_own_event is not None:
                    self.on_own_event(None)
                self.remote.pop(key, None)
                old = self.peers.pop(key, None)
                if old is not None:
                    self._call("remove_peer", old)
                continue
            lease = self._decode(event.kv)
            if lease is None:
                continue
            if self._is_own(key, lease):
                if self.on_own_event is not None:
                    self.on_own_event(event.kv)
                self.remote.pop(key, None)
                old = self.peers.pop(key, None)  # it was remote before we took it
                if old is not None:
                    self._call("remove_peer", old)
                continue
            self.remote[key] = lease
            if self.allowlist is None or self.allowlist.judge(lease):
                self._put(key, lease)
            elif key in self.peers:  # admitted before, refused now (its PublicIP changed)
                self._call("remove_peer", self.peers.pop(key))
        self._flush()

    def _put(self, key: str, lease: Lease) -> None:
        old = self.peers.get(key)
        self.peers[key] = lease
        if old is None:
            self._call("add_peer", lease)
        elif not old.same_attrs(lease):
            self._call("replace_peer", old, lease)

    def _flush(self) -> None:
        """The batch is over: tell the sink (a stand-in sink may not know the call)."""
        if hasattr(self.sink, "flush"):
            self._call("flush")

    def _call(self, method: str, *args: object) -> None:
        """Call the sink; its failures are logged, never fatal to the loop."""
        try:
            getattr(self.sink, method)(*args)
        except Exception:
            log.exception("peer sink %s failed", method)
