"""Run on an etcd member with `python3 -c` (adopt): flanneld's v2 keys under a prefix, read in
one request, or deleted. Standard library only, Python 3.9: curl is not on every host, and
etcdctl 3.4 speaks v2 only as one process per key.

    python3 -c "$(cat etcd_v2_dump.py)" PARAMS_JSON

PARAMS_JSON (one argument): mode ("dump" or "delete"), endpoints (client URLs, tried in order
until one answers), prefix, tls (null or {"ca", "cert", "key"}: https with a client
certificate), timeout (seconds per request; the whole run gets four times that, and half a
second more per key to delete).

dump: prints etcd's answer to `GET /v2/keys<prefix>?recursive=true` as it is (the TTLs left and
every node's modifiedIndex included; overlayctl/etcd/v2.py parses it).
delete: reads [[key, modifiedIndex, dir], ...] on stdin (the nodes of a dump) and deletes each
key only if unchanged since (`prevIndex`), then each directory only if empty, deepest first;
prints {"deleted": n, "gone": n, "kept": [{"key", "why"}]}.

Exit codes: 0 done; 3 no such prefix (etcd's "Key not found", its answer printed); 4 the v2 API
is off on that member (404 without an etcd error: `--enable-v2` is false); 5 no endpoint
answered (refused, timed out, TLS failed); 6 delete kept some keys; 2 bad parameters; 1 any
other answer (printed on stderr).
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def fail(code: int, message: str) -> None:
    """End the run with CODE and one line on stderr."""
    print(f"etcd_v2_dump: {message}", file=sys.stderr)
    sys.exit(code)


def new_client(params: dict[str, Any]) -> dict[str, Any]:
    """The run's connection settings: endpoints (http or https only), per-request timeout,
    the whole run's deadline, and the TLS context when asked for."""
    endpoints = [str(e).rstrip("/") for e in params.get("endpoints") or []]
    if not endpoints or any(not e.startswith(("http://", "https://")) for e in endpoints):
        fail(2, f"endpoints must be http(s) URLs: {endpoints}")
    timeout = float(params.get("timeout") or 5.0)
    context = None
    tls = params.get("tls")
    if tls:
        context = ssl.create_default_context(cafile=tls["ca"])
        context.load_cert_chain(tls["cert"], tls["key"])
    return {"endpoints": endpoints, "timeout": timeout, "context": context,
            "deadline": time.monotonic() + 4 * timeout}  # fmt: skip


def request(client: dict[str, Any], method: str, key: str, query: str) -> tuple[int, str]:
    """(HTTP status, body) from the first endpoint that answers; exit 5 when none does."""
    path = "/v2/keys" + urllib.parse.quote(key) + ("?" + query if query else "")
    errors = []
    for endpoint in client["endpoints"]:
        left = client["deadline"] - time.monotonic()
        if left <= 0.1:
            errors.append("out of time")
            break
        req = urllib.request.Request(endpoint + path, method=method)  # noqa: S310 - http(s) only
        try:
            opened = urllib.request.urlopen(  # noqa: S310 - http(s) only
                req, timeout=min(client["timeout"], left), context=client["context"]
            )
            with opened as got:
                return got.status, got.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out,
            errors.append(f"{endpoint}: {getattr(exc, 'reason', exc)}")  # TLS, no HTTP at all
    fail(5, "no etcd endpoint answered: " + "; ".join(errors))
    return 0, ""  # not reached


def error_code(body: str) -> Any:
    """etcd's v2 errorCode in BODY, None when BODY is no etcd error (the v2 API is off)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("errorCode") if isinstance(doc, dict) else None


def dump(client: dict[str, Any], prefix: str) -> int:
    status, body = request(client, "GET", prefix, "recursive=true")
    code = error_code(body)
    if status == 200:
        print(body)
        return 0
    if status == 404 and code == 100:  # Key not found
        print(body)
        return 3
    if status == 404 and code is None:
        fail(4, "the v2 API is off on this member (404 page not found)")
    fail(1, f"GET {prefix}: HTTP {status}: {body.strip()[:300]}")
    return 1  # not reached


def delete(client: dict[str, Any], nodes: list[list[Any]]) -> int:
    out: dict[str, Any] = {"deleted": 0, "gone": 0, "kept": []}
    keys = [(str(k), f"prevIndex={int(i)}") for k, i, is_dir in nodes if not is_dir]
    dirs = sorted((str(k) for k, _i, is_dir in nodes if is_dir), key=lambda k: -k.count("/"))
    for key, query in keys + [(d, "dir=true") for d in dirs]:
        status, body = request(client, "DELETE", key, query)
        code = error_code(body)
        if status == 200:
            out["deleted"] += 1
        elif code == 100:  # Key not found: expired or deleted meanwhile
            out["gone"] += 1
        elif code == 101:  # Compare failed: written since the dump
            out["kept"].append({"key": key, "why": "changed since the dump"})
        elif code is None and status == 404:
            fail(4, "the v2 API is off on this member (404 page not found)")
        else:
            why = json.loads(body).get("message", "") if code is not None else body.strip()
            out["kept"].append({"key": key, "why": f"HTTP {status}: {str(why)[:200]}"})
    print(json.dumps(out))
    return 6 if out["kept"] else 0


def main(argv: list[str]) -> int:
    try:
        params = json.loads(argv[1])
        prefix = "/" + str(params["prefix"]).strip("/")
        client = new_client(params)
        if params.get("mode") == "dump":
            return dump(client, prefix)
        if params.get("mode") == "delete":
            nodes = json.load(sys.stdin)
            if any(n[0] != prefix and not str(n[0]).startswith(prefix + "/") for n in nodes):
                fail(2, f"a key to delete is outside {prefix}")
            client["deadline"] += 0.5 * len(nodes)  # a request per node, each a few ms
            return delete(client, nodes)
        fail(2, f"unknown mode {params.get('mode')!r}")
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        fail(2, f"bad parameters: {exc!r}")
    except OSError as exc:  # a certificate file missing or unreadable
        fail(1, str(exc))
    return 2  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
