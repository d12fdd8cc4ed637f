"""Library-independent types of the etcd adapter: exceptions, key/values, watch streams.

Import them from :mod:`agent.etcd`; this module exists so that one stays small.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class EtcdError(Exception):
    """Any etcd failure, as seen by the agent."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered (refused, timed out, TLS handshake failed, watch stream broken)."""


class EtcdCompacted(EtcdError):
    """The requested revision has been compacted; the caller must re-list."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


class EtcdAuthError(EtcdError):
    """Authentication or permission failure (bad user/password, missing role)."""


class EtcdLeaseNotFound(EtcdError):
    """The etcd lease does not exist any more (expired or revoked)."""


@dataclass(frozen=True)
class KeyValue:
    """One key as stored in etcd."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int


@dataclass(frozen=True)
class KeyRange:
    """One key, or (``prefix``) every key that starts with it: one read of a transaction."""

    key: str
    prefix: bool = False


@dataclass(frozen=True)
class WatchEvent:
    """A change under a watched prefix. For ``delete`` the value is empty."""

    kind: Literal["put", "delete"]
    kv: KeyValue


# What a watch with a callback calls: each batch of events, or once the error that ended it.
# (Union, not |: the agent also runs on Python 3.9, where this line is evaluated.)
WatchCallback = Callable[[Union[list[WatchEvent], EtcdError]], None]


@dataclass(frozen=True)
class Endpoint:
    """One client URL, split: ``https://10.0.0.1:2379`` -> host, port, secure."""

    url: str
    host: str
    port: int
    secure: bool


def parse_endpoint(url: str) -> Endpoint:
    """Parse an etcd client URL (``http(s)://host:port``; a bare ``host:port`` means http)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid etcd endpoint {url!r}: expected http(s)://host:port")
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise ValueError(f"invalid etcd endpoint {url!r}: bad port") from exc
    return Endpoint(url=url.strip(), host=parts.hostname, port=port, secure=parts.scheme == "https")


class WatchStream:
    """A prefix watch. Iterate for events, or call :meth:`get` with a timeout.

    Raises :class:`EtcdCompacted` when the start revision is gone and
    :class:`EtcdUnavailable` when the stream breaks; after either, the stream is finished.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancel: Callable[[], None] | None = None
        self._done = False

    def _deliver(self, item: Any) -> None:
        self._queue.put(item)

    def get(self, timeout: float | None = None) -> list[WatchEvent] | None:
        """Next batch of events (may be empty: progress), or None when ``timeout`` passed."""
        if self._done:
            raise EtcdUnavailable("watch stream finished")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, list):
            return item
        self._done = True
        self.cancel()
        if item is None:
            raise EtcdUnavailable("watch stream closed by the server")
        raise item

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            batch = self.get()
            yield from batch or ()

    def cancel(self) -> None:
        """Stop the watch (idempotent; never raises)."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            try:
                cancel()
            except Exception as exc:  # a broken stream cannot be cancelled; nothing to do
                log.debug("watch cancel: %s", exc)

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.cancel()
