"""etcdctl command lines (as an operator would type them on a host) and parsers for their output.

overlayctl reaches etcd through `etcdctl` on a member over SSH: it works wherever SSH works
(jump hosts included), and `status -v` can print the exact command for an operator to re-run.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from overlayctl import paths as hostpaths
from overlayctl.errors import OverlayctlError
from overlayctl.inventory.endpoints import etcd_client_urls
from overlayctl.inventory.model import Inventory


def base_argv(
    inv: Inventory, endpoints: list[str] | None = None, *, host_identity: bool = False
) -> list[str]:
    """`etcdctl` with the endpoints and, with TLS, the admin's certificate (CN root: etcd's root
    user over gRPC, which etcdctl speaks). It exists on etcd members only: run these there.
    HOST_IDENTITY: the host's own certificate instead (no user: what auth being on refuses)."""
    argv = [
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--endpoints=" + ",".join(endpoints or etcd_client_urls(inv)),
    ]
    if inv.cluster.tls:
        argv += [
            f"--cacert={hostpaths.CA_CERT}",
            f"--cert={hostpaths.ETCD_CLIENT_CERT if host_identity else hostpaths.ETCD_ADMIN_CERT}",
            f"--key={hostpaths.ETCD_CLIENT_KEY if host_identity else hostpaths.ETCD_ADMIN_KEY}",
        ]
    return argv


def operator_command(inv: Inventory, *args: str) -> str:
    """The command line an operator runs on a host, e.g. for `endpoint health`."""
    return "ETCDCTL_API=3 " + shlex.join(base_argv(inv)[2:] + list(args))


def member_list(inv: Inventory) -> list[str]:
    return [*base_argv(inv), "member", "list", "-w", "json"]


def endpoint_health(inv: Inventory) -> list[str]:
    return [*base_argv(inv), "endpoint", "health", "-w", "json", "--command-timeout=3s"]


def endpoint_status(inv: Inventory) -> list[str]:
    return [*base_argv(inv), "endpoint", "status", "-w", "json", "--command-timeout=3s"]


def get_value(inv: Inventory, key: str) -> list[str]:
    return [*base_argv(inv), "get", key, "-w", "json"]


def txn(inv: Inventory) -> list[str]:
    """A transaction read from stdin (see txn_stdin)."""
    return [*base_argv(inv), "txn", "-w", "json"]


def txn_stdin(key: str, value: str, only_if_absent: bool, lease: int = 0) -> str:
    """Put VALUE at KEY (on etcd lease LEASE, unless 0), only while KEY does not exist when
    ONLY_IF_ABSENT."""
    return txn_puts([(key, value, lease)], only_if_absent)


def txn_puts(puts: Sequence[tuple[str, str, int]], only_if_absent: bool) -> str:
    """Put each (KEY, VALUE, LEASE) of PUTS, all or none: only while none of the keys exists
    when ONLY_IF_ABSENT. LEASE 0: no lease (etcdctl reads a lease ID in hex).

    The value is written in Go's %q quoting, which etcdctl's txn reader understands; JSON string
    escaping is compatible with it.
    """
    compares = "".join(f'version("{key}") = "0"\n' for key, _, _ in puts) if only_if_absent else ""
    ops = "".join(f"put {f'--lease={lease:x} ' if lease else ''}{key} {json.dumps(value)}\n"
                  for key, value, lease in puts)  # fmt: skip
    return f"{compares}\n{ops}\n\n"


@dataclass(frozen=True)
class MemberInfo:
    id: str
    name: str
    peer_urls: list[str]
    client_urls: list[str]


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: str
    healthy: bool
    error: str


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: str
    leader_id: str
    db_size: int
    version: str


def load_json(text: str, what: str) -> Any:
    """etcdctl's `-w json` output, or one line naming the command WHAT."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OverlayctlError(f"etcdctl {what}: output is not JSON: {text.strip()[:200]}") from exc


def parse_members(text: str) -> list[MemberInfo]:
    data = load_json(text, "member list")
    return [
        MemberInfo(
            id=f"{m['ID']:x}",
            name=m.get("name", ""),
            peer_urls=m.get("peerURLs", []),
            client_urls=m.get("clientURLs", []),
        )
        for m in data.get("members", [])
    ]


def parse_health(text: str) -> list[EndpointHealth]:
    """`endpoint health -w json` prints a JSON list (one entry per endpoint) on stdout."""
    out = []
    for item in load_json(text or "[]", "endpoint health"):
        out.append(
            EndpointHealth(
                item.get("endpoint", ""), bool(item.get("health")), item.get("error", "")
            )
        )
    return out


def parse_status(text: str) -> list[EndpointStatus]:
    out = []
    for item in load_json(text or "[]", "endpoint status"):
        st = item.get("Status", {})
        out.append(
            EndpointStatus(
                endpoint=item.get("Endpoint", ""),
                member_id=f"{st.get('header', {}).get('member_id', 0):x}",
                leader_id=f"{st.get('leader', 0):x}",
                db_size=int(st.get("dbSize", 0)),
                version=st.get("version", ""),
            )
        )
    return out


def parse_get(text: str) -> str | None:
    """The value of a `get -w json`, or None when the key does not exist."""
    kvs = load_json(text, "get").get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def parse_txn_succeeded(text: str) -> bool:
    return bool(load_json(text, "txn").get("succeeded"))


def get_prefix(inv: Inventory, prefix: str) -> list[str]:
    return [*base_argv(inv), "get", prefix, "--prefix", "-w", "json"]


def parse_kvs(text: str) -> list[tuple[str, str, int]]:
    """(key, value, lease id) of every key in a `get --prefix -w json`."""
    out = []
    for kv in load_json(text, "get").get("kvs") or []:
        key = base64.b64decode(kv["key"]).decode()
        value = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        out.append((key, value, int(kv.get("lease", 0))))
    return out


def parse_ttls(text: str) -> dict[int, int]:
    """lease id -> seconds left, from lease-ttls.sh's output."""
    ttls = {}
    for line in text.splitlines():
        if line.strip():
            doc = load_json(line, "lease timetolive")
            if "id" in doc:
                ttls[int(doc["id"])] = int(doc.get("ttl", -1))
    return ttls


def member_add(inv: Inventory, name: str, peer_url: str, endpoints: list[str]) -> list[str]:
    return [*base_argv(inv, endpoints), "member", "add", name, f"--peer-urls={peer_url}", "-w",
            "json"]  # fmt: skip


def member_remove(inv: Inventory, member_id: str, endpoints: list[str]) -> list[str]:
    return [*base_argv(inv, endpoints), "member", "remove", member_id]


def parse_member_add(text: str) -> str:
    """The new member's id (hex, as `member remove` wants it)."""
    return f"{load_json(text, 'member add')['member']['ID']:x}"
