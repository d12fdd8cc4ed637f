"""etcd v3 over its HTTP/JSON gateway (``/v3/...``), standard library only: the default transport.

Why not the gRPC library: importing grpc, protobuf and asyncio and opening a channel costs
every agent ~0.25 CPU-s and ~15 MB before it has done anything; with a hundred agents starting
on a small host that is most of the start-up time (benchmarks/scale.py). etcd serves the same
API as JSON over the client port (etcd 3.4 and later: ``/v3/kv/range``, ``/v3/watch``, ...),
so a small HTTP/1.1 client (agent/http/wire.py), ``ssl`` and ``json`` do the same job. Bytes
are base64 and 64-bit integers are strings in that JSON; streams (watch, lease keep-alive) are
one JSON object per line.

Each endpoint keeps a small pool of keep-alive connections for unary calls; every watch has its
own connection and reader thread, with TCP keep-alive probes so a dead peer breaks the stream
within ~25 s (the gRPC transport pings for the same reason). Those wire parts, and etcd's JSON
encodings, are in agent/etcd/session.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.etcd.base import EtcdClientBase
from agent.etcd.session import (
    Gateway,
    WatchReader,
    b64,
    closed_on_error,
    decode_kv,
    enable_keepalive,
    prefix_end,
    raise_if_canceled,
    read_message,
    revision_of,
)
from agent.etcd.types import (
    EtcdError,
    EtcdUnavailable,
    KeyRange,
    KeyValue,
    WatchCallback,
    WatchStream,
)
from agent.http.wire import Connection, Response

if TYPE_CHECKING:
    import ssl


def _absent(key: str) -> dict[str, Any]:
    """The comparison "KEY does not exist" (its version is 0)."""
    return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}


def _unchanged(key: str, mod_revision: int) -> dict[str, Any]:
    """The comparison "KEY is unchanged since MOD_REVISION"."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def _range_body(what: KeyRange) -> dict[str, Any]:
    body = {"key": b64(what.key)}
    if what.prefix:
        body["range_end"] = prefix_end(what.key)
    return body


def _range_kvs(response: dict[str, Any]) -> list[KeyValue]:
    """The keys of one range response inside a transaction's reply."""
    found = response.get("response_range") or {}
    return [decode_kv(kv) for kv in found.get("kvs") or []]


class HttpEtcdClient(EtcdClientBase):
    """The etcd client over the JSON gateway (see :class:`agent.etcd.base.EtcdClientBase`)."""

    transport = "http"

    def ssl_context(self) -> ssl.SSLContext:
        """Verify the server against the CA (or the system's); present our client cert."""
        import ssl  # noqa: PLC0415 - only https endpoints pay for it

        ca_file, cert_file, key_file = self._tls_files
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file and key_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def _open(self, index: int) -> Gateway:
        endpoint = self.endpoints[index]
        context = self.ssl_context() if endpoint.secure else None
        return Gateway(endpoint, self.timeout, context, self._auth)

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(what, lambda gw: gw.post(path, body))

    # -- key/value ---------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None."""
        reply = self._post("get", "/v3/kv/range", {"key": b64(key)})
        kvs = reply.get("kvs") or []
        return decode_kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` (sorted by key) and the revision of that snapshot."""
        body = {"key": b64(prefix), "range_end": prefix_end(prefix)}
        reply = self._post("get_prefix", "/v3/kv/range", body)
        return [decode_kv(kv) for kv in reply.get("kvs") or []], revision_of(reply)

    def get_ranges(self, ranges: Sequence[KeyRange]) -> tuple[list[list[KeyValue]], int]:
        """Several reads in one request (a transaction without comparisons): each range's
        keys, all at one revision, which is returned too."""
        ops = [{"request_range": _range_body(r)} for r in ranges]
        reply = self._post("get_ranges", "/v3/kv/txn", {"compare": [], "success": ops})
        return [_range_kvs(resp) for resp in reply.get("responses") or []], revision_of(reply)

    def put_else_get(
        self, key: str, value: bytes | str, lease_id: int, other: KeyRange, mod_revision: int = 0
    ) -> tuple[bool, list[KeyValue], int]:
        """:meth:`create` (``mod_revision`` 0) or :meth:`replace`, and when that fails, OTHER's
        keys in the same request: (written, OTHER's keys if not, revision)."""
        body = {
            "compare": [_unchanged(key, mod_revision) if mod_revision else _absent(key)],
            "success": [self._put_op(key, value, lease_id)],
            "failure": [{"request_range": _range_body(other)}],
        }
        reply = self._post("create", "/v3/kv/txn", body)
        if reply.get("succeeded", False):
            return True, [], revision_of(reply)
        responses = reply.get("responses") or [{}]
        return False, _range_kvs(responses[0]), revision_of(reply)

    def put(self, key: str, value: bytes | str, lease_id: int = 0) -> int:
        """Write unconditionally; returns the new revision."""
        body = {"key": b64(key), "value": b64(value), "lease": str(lease_id)}
        return revision_of(self._post("put", "/v3/kv/put", body))

    def _txn(self, what: str, compare: dict[str, Any], success: dict[str, Any]) -> bool:
        body = {"compare": [compare], "success": [success], "failure": []}
        return bool(self._post(what, "/v3/kv/txn", body).get("succeeded", False))

    @staticmethod
    def _put_op(key: str, value: bytes | str, lease_id: int) -> dict[str, Any]:
        return {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease_id)}}

    def create(self, key: str, value: bytes | str, lease_id: int = 0) -> bool:
        """Put only if the key does not exist (one transaction: version == 0)."""
        return self._txn("create", _absent(key), self._put_op(key, value, lease_id))

    def replace(self, key: str, value: bytes | str, mod_revision: int, lease_id: int = 0) -> bool:
        """Put only if the key is unchanged since ``mod_revision`` (compare-and-swap)."""
        return self._txn(
            "replace", _unchanged(key, mod_revision), self._put_op(key, value, lease_id)
        )

    def delete(self, key: str) -> bool:
        """Delete one key; True if it existed."""
        return (
            int(self._post("delete", "/v3/kv/deleterange", {"key": b64(key)}).get("deleted", 0)) > 0
        )

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete the key only if it is unchanged since ``mod_revision``."""
        delete = {"request_delete_range": {"key": b64(key)}}
        return self._txn("delete", _unchanged(key, mod_revision), delete)

    def compact(self, revision: int) -> None:
        """Compact the history up to ``revision`` (tests and maintenance)."""
        self._post("compact", "/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # -- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (id, granted TTL in seconds)."""
        reply = self._post("lease grant", "/v3/lease/grant", {"TTL": str(int(ttl))})
        if reply.get("error"):
            raise EtcdError(f"etcd lease grant: {reply['error']}")
        return int(reply.get("ID", 0)), int(reply.get("TTL", 0))

    def _keepalive_once(self, session: Gateway, lease_id: int) -> int:
        conn, resp = session.open_stream("/v3/lease/keepalive", {"ID": str(lease_id)})
        with contextlib.closing(conn), closed_on_error(conn):  # one answer is all we want
            message = read_message(resp) or {}
        return int(message.get("TTL", 0))

    def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 if the lease does not exist."""
        reply = self._post("lease ttl", "/v3/lease/timetolive", {"ID": str(lease_id)})
        return int(reply.get("TTL", -1))

    def _revoke_once(self, session: Gateway, lease_id: int) -> None:
        session.post("/v3/lease/revoke", {"ID": str(lease_id)})

    # -- watch -------------------------------------------------------------------------------

    def watch(
        self,
        what: KeyRange,
        start_revision: int | None = None,
        callback: WatchCallback | None = None,
    ) -> WatchStream:
        """Watch one key or a prefix from ``start_revision`` (inclusive). A single key needs
        read permission on that key only (a prefix, on the whole range).

        Without ``callback``, read the returned stream. With it, ``callback`` is called from the
        watch's reader thread with each batch of events, or once with an :class:`EtcdError`.
        """
        create: dict[str, Any] = _range_body(what)
        if start_revision:
            create["start_revision"] = str(start_revision)

        def start(gw: Gateway) -> tuple[Connection, Response]:
            conn, resp = gw.open_stream("/v3/watch", {"create_request": create})
            with closed_on_error(conn):
                first = read_message(resp)  # "created", or the refusal of a compacted start
                if first is None:
                    raise EtcdUnavailable("watch stream closed by the server")
                raise_if_canceled(first)
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # idle watches are normal; keep-alive probes
                    enable_keepalive(conn.sock)
            return conn, resp

        conn, resp = self._call("watch", start)
        return WatchReader(conn, resp, callback).stream

    # -- cluster -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The current endpoint's status: version, leader, db size, raft index and term."""
        st = self._post("status", "/v3/maintenance/status", {})
        return {
            "endpoint": self.current_endpoint,
            "version": str(st.get("version", "")),
            "db_size": int(st.get("dbSize", 0)),
            "leader": int(st.get("leader", 0)),
            "raft_index": int(st.get("raftIndex", 0)),
            "raft_term": int(st.get("raftTerm", 0)),
        }

    def members(self) -> list[dict[str, Any]]:
        """The cluster's members: id, name, peer and client URLs."""
        reply = self._post("member list", "/v3/cluster/member/list", {})
        return [
            {
                "id": int(m.get("ID", 0)),
                "name": str(m.get("name", "")),
                "peer_urls": list(m.get("peerURLs") or []),
                "client_urls": list(m.get("clientURLs") or []),
            }
            for m in reply.get("members") or []
        ]
