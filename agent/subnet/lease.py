"""Subnet lease manager: acquire, renew and re-acquire our lease in etcd (flannel's layout).

Independent of any data plane: it exposes :attr:`LeaseManager.current` and calls
``on_change(old, new)`` whenever our lease changes. Better than flannel where flannel fails:
a lost create race is retried with another subnet; a deleted or expired lease is re-acquired,
preferring the same subnet; reservations (keys without TTL) are honoured; duplicates reported.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Optional

from agent.etcd import (
    EtcdClient,
    EtcdError,
    EtcdLeaseNotFound,
    KeyRange,
    KeyValue,
    WatchEvent,
    WatchStream,
)
from agent.subnet.choice import Conflict, find_conflicts
from agent.subnet.claim import Claimer, LeaseError, NoSubnetLeft, list_leases
from agent.subnet.config import NetworkConfig
from agent.subnet.layout import (
    Lease,
    LeaseDecodeError,
    decode_lease,
    encode_lease_value,
    subnets_dir,
)
from agent.subnet.watch import Backoff

__all__ = ["LeaseError", "LeaseManager", "NoSubnetLeft", "list_leases"]

log = logging.getLogger(__name__)

DEFAULT_TTL = 24 * 3600
DEFAULT_RENEW_MARGIN = 3600
DEFAULT_RETRY_INTERVAL = 60.0
DEFAULT_CHECK_INTERVAL = 30.0
DEFAULT_CONFLICT_INTERVAL = 300.0
MIN_CHECK_GAP = 0.5  # never check our key more often than this, whatever pokes us
MIN_RETRY_GAP = 1.0  # never try to acquire more often than this, whatever wakes us

ChangeCallback = Callable[[Optional[Lease], Optional[Lease]], None]


class LeaseManager:
    """Holds one subnet lease for ``public_ip``; run it with :meth:`start`."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        config: NetworkConfig,
        public_ip: IPv4Address | str,
        backend_data: Mapping[str, Any] | None = None,
        *,
        backend_type: str | None = None,
        ttl: int = DEFAULT_TTL,
        renew_margin: float = DEFAULT_RENEW_MARGIN,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        conflict_interval: float = DEFAULT_CONFLICT_INTERVAL,
        previous_subnet: IPv4Network | None = None,
        max_attempts: int = 32,
        rng: random.Random | None = None,
        on_change: ChangeCallback | None = None,
        initial_leases: Sequence[KeyValue] | None = None,
        watch_own_key: bool = True,
    ) -> None:
        if not 0 <= renew_margin < ttl:
            raise ValueError(f"renew margin {renew_margin}s must be below the lease TTL {ttl}s")
        self.client = client
        self.prefix = prefix
        self.config = config
        self.public_ip = IPv4Address(str(public_ip))
        self.backend_type = backend_type or config.backend_type
        self.backend_data = backend_data
        self.ttl = int(ttl)
        self.renew_margin = renew_margin
        self.retry_interval = retry_interval
        # Failed acquisitions wait 1 s, 2 s, ... up to retry_interval: a flat 60 s wait after
        # etcd came back (data restored, auth being set up again) kept a host without its lease
        # for a minute or more after etcd could grant one again.
        self._acquire_backoff = Backoff(min(1.0, retry_interval), retry_interval)
        self.check_interval = check_interval
        self.conflict_interval = conflict_interval
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()  # noqa: S311 - spreading subnets, not cryptography
        self.on_change = on_change
        self.conflicts: list[Conflict] = []
        self.expires_at: float | None = None  # wall clock; None for a reservation
        self._preferred = previous_subnet
        self._current: Lease | None = None
        self._renew_at = 0.0  # monotonic
        self._cond = threading.Condition()
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key_watch: WatchStream | None = None
        # The start snapshot's leases, used by the first choice instead of listing them again.
        self._initial = list(initial_leases) if initial_leases is not None else None
        # False when the caller's watch of every lease pokes us on changes of our key (the
        # agent's SubnetWatcher): a watch of our own key would be one more stream per agent.
        self.watch_own_key = watch_own_key
        self._free_watch: WatchStream | None = None  # while no subnet is free
        self.last_error = ""  # why the last acquisition failed ("" once one succeeded)

    # -- state ---------------------------------------------------------------------------------

    @property
    def current(self) -> Lease | None:
        """The lease we hold right now (None while acquiring)."""
        return self._current

    def wait_for_lease(self, timeout: float) -> Lease | None:
        """Block until a lease is held or ``timeout`` passed."""
        with self._cond:
            self._cond.wait_for(lambda: self._current is not None, timeout=timeout)
            return self._current

    def _set_current(self, new: Lease | None) -> None:
        with self._cond:
            old, self._current = self._current, new
            self._cond.notify_all()
        if new is not None:
            self._preferred = new.subnet
        if self.on_change is not None and (
            old is None or new is None or old.key != new.key or not old.same_attrs(new)
        ):
            try:
                self.on_change(old, new)
            except Exception:
                log.exception("lease change callback failed")

    def set_backend_data(self, backend_data: Mapping[str, Any] | None) -> Lease | None:
        """New BackendData (e.g. a recreated VTEP's MAC): rewrite our key, keeping the lease."""
        self.backend_data = backend_data
        lease = self._current
        if lease is None:
            return None
        value = encode_lease_value(self.public_ip, self.backend_type, backend_data)
        if not self.client.replace(lease.key, value, lease.mod_revision, lease.lease_id):
            self.poke()  # changed under us: let the loop sort it out
            return None
        kv = self.client.get(lease.key)
        if kv is not None:
            self._set_current(decode_lease(kv.key, kv.value, kv.lease_id, kv.mod_revision))
        return self._current

    def poke(self, seen: KeyValue | None = None) -> None:
        """Check our key now: a watch saw it change (SEEN: its new value, None if deleted or
        unknown). The put of the lease we hold (our own create, seen by the watch) needs no
        check: a read per agent at start saved."""
        lease = self._current
        if (
            seen is not None
            and lease is not None
            and seen.key == lease.key
            and seen.lease_id == lease.lease_id
            and seen.mod_revision == lease.mod_revision
        ):
            return
        self._poked.set()

    # -- acquire -------------------------------------------------------------------------------

    def acquire(self) -> Lease:
        """Choose and claim a subnet now and hold it (:class:`LeaseError`, EtcdError)."""
        lease = self._acquire()
        self._set_current(lease)
        self._ensure_key_watch()
        return lease

    def _acquire(self) -> Lease:
        """Claim a subnet (agent/subnet/claim.py); the first choice uses the start snapshot's
        leases when there is one."""
        kvs, self._initial = self._initial, None
        claimer = Claimer(
            self.client, self.prefix, self.config, self.public_ip, self.backend_type,
            self.backend_data, self.ttl, self.rng, self._stop, self.max_attempts,
        )  # fmt: skip
        claimed = claimer.claim(self._preferred, kvs)
        self._note_ttl(claimed.lease.lease_id, claimed.ttl)
        self._note_conflicts(claimed.seen)
        return claimed.lease

    def _note_ttl(self, lease_id: int, ttl: int) -> None:
        if not lease_id:
            self.expires_at, self._renew_at = None, float("inf")
            return
        self.expires_at = time.time() + ttl
        self._renew_at = time.monotonic() + max(ttl - self.renew_margin, 0.5)

    # -- background loop -----------------------------------------------------------------------

    def start(self) -> None:
        """Acquire (if needed), then renew and re-acquire in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-manager", daemon=True)
        self._thread.start()

    def stop(self, revoke: bool = False, timeout: float = 10.0) -> None:
        """Stop the loop; with ``revoke`` also delete our lease (flannel keeps it)."""
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._drop_key_watch()
        self._drop_free_watch()
        lease = self._current
        if revoke and lease is not None:
            with contextlib.suppress(EtcdError):
                if lease.is_reservation:
                    log.info("keeping reservation %s", lease.subnet)
                else:
                    self.client.lease_revoke(lease.lease_id)

    def _run(self) -> None:
        # The first conflict check uses the leases of the acquisition (no list of its own).
        next_conflicts = time.monotonic() + self.conflict_interval
        last_check = 0.0
        while not self._stop.is_set():
            if self._current is None:
                self._try_acquire()
                continue
            now = time.monotonic()
            wake = min(self._renew_at, now + self.check_interval, next_conflicts)
            self._poked.wait(max(wake - now, 0.0))
            if self._stop.is_set():
                return
            gap = MIN_CHECK_GAP - (time.monotonic() - last_check)
            if self._poked.is_set() and gap > 0:
                self._stop.wait(gap)
            self._poked.clear()
            last_check = time.monotonic()
            try:
                if last_check >= self._renew_at:
                    self._renew()
                if self._current is not None:
                    self._check_key()
                if last_check >= next_conflicts:
                    next_conflicts = last_check + self.conflict_interval
                    self.check_conflicts()
            except EtcdError as exc:
                log.warning("etcd error while holding %s: %s", self._current, exc)

    def _try_acquire(self) -> None:
        """One acquisition; after a failure, wait 1, 2, 4 ... s (at most retry_interval). With
        no subnet free, a deleted or expired lease ends the wait early, but never sooner than
        MIN_RETRY_GAP after the last attempt: a full network costs etcd a bounded rate."""
        tried = time.monotonic()
        try:
            self.acquire()
        except (LeaseError, EtcdError) as exc:
            self.last_error = str(exc)
            delay = self._acquire_backoff.next()
            log.error("subnet lease: %s; retrying in %.1fs", exc, delay)
            if isinstance(exc, NoSubnetLeft):
                self._watch_for_freed()
            self._poked.clear()
            self._poked.wait(delay)
            self._stop.wait(max(MIN_RETRY_GAP - (time.monotonic() - tried), 0.0))
        else:
            self.last_error = ""
            self._acquire_backoff.reset()
            self._drop_free_watch()

    def _watch_for_freed(self) -> None:
        """While no subnet is free: poke the loop when any lease is deleted or expires."""
        if self._free_watch is not None:
            return

        def on_event(item: list[WatchEvent] | EtcdError) -> None:
            if isinstance(item, EtcdError):
                self._free_watch = None  # the backoff still retries
            elif any(e.kind == "delete" for e in item):
                self._poked.set()

        try:
            self._free_watch = self.client.watch_prefix(subnets_dir(self.prefix), callback=on_event)
        except EtcdError as exc:
            log.debug("cannot watch for freed subnets: %s", exc)

    def _drop_free_watch(self) -> None:
        watch, self._free_watch = self._free_watch, None
        if watch is not None:
            watch.cancel()

    def _renew(self) -> None:
        lease = self._current
        if lease is None or lease.is_reservation:
            return
        try:
            ttl = self.client.lease_refresh(lease.lease_id)
        except EtcdLeaseNotFound:
            self._lost(f"etcd lease of {lease.subnet} expired or was revoked")
            return
        except EtcdError as exc:
            log.warning(
                "renewing %s failed: %s; retrying in %.1fs", lease.subnet, exc, self.retry_interval
            )
            self._renew_at = time.monotonic() + self.retry_interval
            return
        self._note_ttl(lease.lease_id, ttl)
        log.debug("renewed %s for %ss", lease.subnet, ttl)

    def _check_key(self) -> None:
        """Is our key still ours? Re-acquire if it vanished, adopt a reservation for us."""
        lease = self._current
        if lease is None:
            return
        self._ensure_key_watch()
        kv = self.client.get(lease.key)
        if kv is None:
            self._lost(f"lease key {lease.key} was deleted or expired")
            return
        if kv.lease_id == lease.lease_id:
            return
        try:
            now = decode_lease(kv.key, kv.value, kv.lease_id, kv.mod_revision)
        except LeaseDecodeError as exc:
            log.error("our lease key was overwritten with garbage (%s); re-acquiring", exc)
            self._lost("lease key overwritten")
            return
        if now.public_ip != self.public_ip:
            log.error(
                "subnet %s was taken over by PublicIP %s; re-acquiring", now.subnet, now.public_ip
            )
            self._preferred = None
            self._lost("lease taken over")
        elif now.is_reservation:
            log.info("subnet %s is now reserved for us", now.subnet)
            with contextlib.suppress(EtcdError):
                self.client.lease_revoke(lease.lease_id)
            self._note_ttl(0, 0)
            self._set_current(now)
        else:
            log.error(
                "subnet %s now carries another etcd lease with our PublicIP %s: is a second"
                " agent using this PublicIP?",
                now.subnet,
                self.public_ip,
            )

    def _lost(self, why: str) -> None:
        log.warning(
            "%s: re-acquiring, preferring %s (the data plane stays up)", why, self._preferred
        )
        self._drop_key_watch()
        try:
            self.acquire()
        except (LeaseError, EtcdError) as exc:
            log.error("re-acquiring failed: %s", exc)
            self._set_current(None)

    def _ensure_key_watch(self) -> None:
        lease = self._current
        if self._key_watch is not None or lease is None or not self.watch_own_key:
            return

        def on_event(item: list[WatchEvent] | EtcdError) -> None:
            if isinstance(item, EtcdError):
                self._key_watch = None
                self.poke()
            elif any(e.kv.key == lease.key for e in item):
                self.poke()

        try:
            # From the revision we hold: a change made before the watch is in place is not lost.
            self._key_watch = self.client.watch(
                KeyRange(lease.key), lease.mod_revision + 1, callback=on_event
            )
        except EtcdError as exc:
            log.debug("cannot watch our key yet: %s", exc)

    def _drop_key_watch(self) -> None:
        watch, self._key_watch = self._key_watch, None
        if watch is not None:
            watch.cancel()

    # -- conflicts -----------------------------------------------------------------------------

    def check_conflicts(self) -> list[Conflict]:
        """List all leases and report duplicate PublicIPs and overlapping subnets."""
        leases, _ = list_leases(self.client, self.prefix)
        return self._note_conflicts(leases)

    def _note_conflicts(self, leases: list[Lease]) -> list[Conflict]:
        found = find_conflicts(leases)
        if found != self.conflicts:
            for conflict in found:
                log.error("lease conflict: %s", conflict.detail)
        self.conflicts = found
        return found
