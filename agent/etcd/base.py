"""What every etcd transport of the agent shares: arguments, failover, error classes.

A transport (agent/etcd/gateway.py, agent/etcd/grpc.py) subclasses :class:`EtcdClientBase` and
supplies ``_open(index)`` (a per-endpoint session, kept until ``_forget``, closed with its
``close()`` unless ``_close_session`` says otherwise), ``_keepalive_once`` and ``_revoke_once``
(the wire side of lease_refresh / lease_revoke) and the key/value, lease, watch and cluster
calls, each run through :meth:`_call`.

Failover: a call that fails with a connection error is retried once on each of the other
endpoints, in order, before :class:`EtcdUnavailable` is raised; an auth error is retried once
with a fresh session (the token may have expired). ``errors`` counts calls that failed (for
/metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from agent.etcd.types import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    KeyRange,
    WatchCallback,
    WatchStream,
    parse_endpoint,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0

# gRPC status codes (the gateway reports the same numbers in its JSON errors).
CODE_CANCELLED = 1
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_PERMISSION_DENIED = 7
CODE_INTERNAL = 13
CODE_UNAVAILABLE = 14
CODE_UNAUTHENTICATED = 16
_UNAVAILABLE_CODES = (CODE_UNAVAILABLE, CODE_DEADLINE_EXCEEDED, CODE_INTERNAL, CODE_CANCELLED)
_AUTH_CODES = (CODE_UNAUTHENTICATED, CODE_PERMISSION_DENIED)
_AUTH_WORDS = ("auth", "user name", "password", "permission")
# etcd's answer to a login while its authentication is off. Not a failure: `init` gives agents
# their user and password before it switches authentication on, so that no agent is ever locked
# out; until then they call without a token, and log in on the first call refused for lack of one.
AUTH_NOT_ENABLED = "authentication is not enabled"


def auth_is_off(exc: BaseException) -> bool:
    """EXC is etcd saying that its authentication is off (whatever the transport wrapped)."""
    return AUTH_NOT_ENABLED in str(exc)


def classify(code: int | None, details: str) -> EtcdError:
    """Our exception for an etcd error reply: its gRPC status code and message."""
    if "lease not found" in details:
        return EtcdLeaseNotFound(details)
    if "compacted" in details:
        return EtcdCompacted(0)
    if code in _AUTH_CODES or (
        code == CODE_INVALID_ARGUMENT and any(w in details for w in _AUTH_WORDS)
    ):
        return EtcdAuthError(details)
    if code in _UNAVAILABLE_CODES:
        return EtcdUnavailable(details or "etcd unavailable")
    return EtcdError(details)


def read_tls_file(path: str | None) -> bytes | None:
    """A TLS file's bytes (None for no path); ValueError naming the file if unreadable."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read etcd TLS file {path}: {exc.strerror}") from exc


class EtcdClientBase:
    """A thread-safe etcd v3 client over several endpoints with failover, TLS and auth."""

    transport = ""

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...] | str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        urls = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        self.endpoints = tuple(parse_endpoint(u) for u in urls if u.strip())
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        if bool(cert_file) != bool(key_file):
            raise ValueError("etcd client certificate and key must be given together")
        if bool(username) != bool(password):
            raise ValueError("etcd username and password must be given together")
        self._tls = tuple(read_tls_file(p) for p in (ca_file, cert_file, key_file))
        self._tls_files = (ca_file, cert_file, key_file)
        self._auth = (username, password)
        self.timeout = timeout
        self.errors = 0
        self._lock = threading.Lock()
        self._sessions: dict[int, Any] = {}
        self._current = 0

    # -- what a transport provides -------------------------------------------------------------

    def _open(self, index: int) -> Any:
        """A new session with endpoint ``index`` (a connection pool, a library client)."""
        raise NotImplementedError

    def _close_session(self, session: Any) -> None:
        """Release what ``_open`` made (both transports' sessions have ``close``)."""
        session.close()

    def _keepalive_once(self, session: Any, lease_id: int) -> int:
        """One lease keep-alive on SESSION: the new TTL, 0 or less if the lease is gone."""
        raise NotImplementedError

    def _revoke_once(self, session: Any, lease_id: int) -> None:
        """Revoke the lease on SESSION (EtcdLeaseNotFound if it does not exist)."""
        raise NotImplementedError

    def _translate(self, exc: BaseException) -> EtcdError:
        """Our exception for whatever the transport raised."""
        return exc if isinstance(exc, EtcdError) else EtcdError(f"{type(exc).__name__}: {exc}")

    # -- sessions and failover -----------------------------------------------------------------

    @property
    def current_endpoint(self) -> str:
        """The URL of the endpoint used for the next call."""
        return self.endpoints[self._current].url

    def _session(self, index: int) -> Any:
        with self._lock:
            session = self._sessions.get(index)
            if session is not None:
                return session
        session = self._open(index)
        with self._lock:
            kept = self._sessions.setdefault(index, session)
        if kept is not session:
            self._close_session(session)
        return kept

    def _forget(self, index: int) -> None:
        """Drop a session (stale auth token); in-flight calls keep their own reference."""
        with self._lock:
            self._sessions.pop(index, None)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)``, failing over across endpoints on connection errors."""
        try:
            return self._call_with_failover(what, fn)
        except EtcdError:
            self.errors += 1
            raise

    def _call_with_failover(self, what: str, fn: Callable[[Any], T]) -> T:
        errors: list[str] = []
        start = self._current
        count = len(self.endpoints)
        for step in range(count):
            index = (start + step) % count
            auth_retry = bool(self._auth[0])
            while True:
                try:
                    result = fn(self._session(index))
                except Exception as exc:
                    err = self._translate(exc)
                    if isinstance(err, EtcdAuthError) and auth_retry:
                        auth_retry = False  # the token may have expired: authenticate again
                        self._forget(index)
                        continue
                    if not isinstance(err, EtcdUnavailable):
                        raise err from exc
                    errors.append(f"{self.endpoints[index].url}: {err}")
                    break
                if index != self._current:
                    log.info("etcd: now using endpoint %s", self.endpoints[index].url)
                    self._current = index
                return result
        self._current = (start + 1) % count
        raise EtcdUnavailable(f"etcd {what} failed on every endpoint: " + "; ".join(errors))

    # -- lease calls whose meaning both transports share ------------------------------------

    def lease_refresh(self, lease_id: int) -> int:
        """Keep the lease alive once; returns the new TTL. EtcdLeaseNotFound if it is gone."""
        ttl = self._call("lease refresh", lambda session: self._keepalive_once(session, lease_id))
        if ttl <= 0:
            raise EtcdLeaseNotFound(f"etcd lease {lease_id:x} not found (expired or revoked)")
        return ttl

    def lease_revoke(self, lease_id: int) -> bool:
        """Revoke the lease (its keys are deleted); False if it did not exist."""
        try:
            self._call("lease revoke", lambda session: self._revoke_once(session, lease_id))
        except EtcdLeaseNotFound:
            return False
        return True

    def watch(
        self,
        what: KeyRange,
        start_revision: int | None = None,
        callback: WatchCallback | None = None,
    ) -> WatchStream:
        """Watch one key or a prefix (each transport implements it)."""
        raise NotImplementedError

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int | None = None,
        callback: WatchCallback | None = None,
    ) -> WatchStream:
        """Watch every key under ``prefix`` from ``start_revision`` (inclusive)."""
        return self.watch(KeyRange(prefix, prefix=True), start_revision, callback)

    def close(self) -> None:
        """Close every session."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            try:
                self._close_session(session)
            except Exception as exc:
                log.debug("etcd close: %s", exc)

    def __enter__(self) -> EtcdClientBase:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
