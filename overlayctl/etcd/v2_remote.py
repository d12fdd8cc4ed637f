"""flanneld's v2 keys on a member, through SSH: read them (one request), import them into v3 as
etcd/v2_import.py decided (etcdctl on that member), and delete them once imported.

The v2 side goes through remote/scripts/etcd_v2_dump.py (urllib: curl is not on every host,
and etcdctl speaks v2 one process per key); the v3 side through etcdctl, as every etcd step of
overlayctl does. REACH is the inventory etcd is reached as: during adopt its clients are still
plain http (the inventory with tls off), whatever the final inventory says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.etcd.v2 import V2Network
from overlayctl.etcd.v2_import import V3Write
from overlayctl.inventory.endpoints import etcd_client_urls
from overlayctl.inventory.model import Inventory
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Command, Remote, RunResult, batch_checked, command_of

DUMP = HostScript("etcd_v2_dump.py")
REQUEST_TIMEOUT = 5.0  # per v2 request; the script's whole run gets four times that
# The script's exit codes (see its docstring).
FOUND, NO_PREFIX, V2_OFF, UNREACHABLE, KEPT = 0, 3, 4, 5, 6
# etcdctl's txn reads stdin, and a batch gives every command /dev/null: the text comes as $1.
TXN_FROM_ARG = 'txn=$1; shift; printf %s "$txn" | "$@"'
TXN_KEYS = 100  # keys per transaction: etcd's --max-txn-ops (128) bounds its compares and puts


@dataclass(frozen=True)
class V2Read:
    """What the member's v2 API answered: STATE found, absent (no such prefix) or off (v2
    disabled there); TEXT etcd's answer (parse it with etcd/v2.parse_dump)."""

    state: str
    text: str = ""


@dataclass(frozen=True)
class Dropped:
    """What the delete did: keys deleted, already gone, and (key, why) of those kept."""

    deleted: int
    gone: int
    kept: tuple[tuple[str, str], ...]


def _params(reach: Inventory, mode: str, endpoints: list[str] | None) -> str:
    tls = None
    if reach.cluster.tls:
        tls = {"ca": hp.CA_CERT, "cert": hp.ETCD_ADMIN_CERT, "key": hp.ETCD_ADMIN_KEY}
    return json.dumps({"mode": mode, "endpoints": endpoints or etcd_client_urls(reach),
                       "prefix": reach.cluster.etcd_prefix, "tls": tls,
                       "timeout": REQUEST_TIMEOUT})  # fmt: skip


def dump_command(reach: Inventory, endpoints: list[str] | None = None) -> Command:
    """The v2 dump of the prefix, through ENDPOINTS (REACH's client URLs, the first member's
    first): for a batch with other reads; parse its result with parse_read."""
    return command_of(DUMP, _params(reach, "dump", endpoints))


def parse_read(got: RunResult, member: str) -> V2Read:
    """dump_command's RESULT on MEMBER -> V2Read; OverlayctlError when etcd did not answer."""
    if got.code == FOUND:
        return V2Read("found", got.stdout)
    if got.code == NO_PREFIX:
        return V2Read("absent", got.stdout)
    if got.code == V2_OFF:
        return V2Read("off")
    raise OverlayctlError(f"{member}: reading etcd's v2 keys failed: {_why(got)}")


def _why(got: RunResult) -> str:
    return got.stderr.strip().removeprefix("etcd_v2_dump: ") or f"exit {got.code}"


def read_v2(remote: Remote, reach: Inventory, endpoints: list[str] | None = None) -> V2Read:
    argv, label = dump_command(reach, endpoints)
    got = remote.run(argv, check=False, timeout=4 * REQUEST_TIMEOUT + 30, log_as=label,
                     waiting_for="etcd's v2 keys")  # fmt: skip
    return parse_read(got, remote.target.name)


def read_v3(remote: Remote, reach: Inventory) -> list[tuple[str, str, int]]:
    """(key, value, lease id) of every v3 key under the prefix (the config and the subnets)."""
    argv = etcdctl.get_prefix(reach, reach.cluster.etcd_prefix.rstrip("/") + "/")
    return etcdctl.parse_kvs(remote.run(argv, timeout=60).stdout)


def _grant(reach: Inventory, ttl: int) -> Command:
    return [*etcdctl.base_argv(reach), "lease", "grant", str(ttl), "-w", "json"], \
        f"etcdctl lease grant {ttl}"  # fmt: skip


def _revoke(reach: Inventory, lease_id: int) -> Command:
    return [*etcdctl.base_argv(reach), "lease", "revoke", f"{lease_id:x}"], \
        f"etcdctl lease revoke {lease_id:x}"  # fmt: skip


def _txns(remote: Remote, reach: Inventory, groups: list[list[tuple[str, str, int]]]) -> list[bool]:
    """One create-if-absent transaction per group of (key, value, lease) puts, all in one round
    trip; whether each succeeded (every key absent, so all written) or not (none written)."""
    txns = [
        (["sh", "-c", TXN_FROM_ARG, "sh", etcdctl.txn_puts(group, only_if_absent=True),
          *etcdctl.txn(reach)], f"etcdctl txn: create {group[0][0]}"
          + (f" and {len(group) - 1} more" if len(group) > 1 else ""))
        for group in groups
    ]  # fmt: skip
    return [etcdctl.parse_txn_succeeded(got.stdout)
            for got in batch_checked(remote, txns, waiting_for="etcd transactions")]  # fmt: skip


def apply(remote: Remote, reach: Inventory, writes: tuple[V3Write, ...]) -> int:
    """WRITES, each create-if-absent, a leased one on an etcd lease of its own. Three round trips
    at most: the leases granted; the keys created TXN_KEYS to a transaction (a process per key
    cost 6 s at 255 leases); where one of those found a key written meanwhile, its keys one by
    one. Returns how many keys were written; the leases of keys another writer beat are revoked."""
    leased = [w for w in writes if w.ttl]
    granted = batch_checked(
        remote, [_grant(reach, w.ttl) for w in leased], waiting_for="etcd leases"
    )
    lease_of = {w.key: int(etcdctl.load_json(got.stdout, "lease grant")["ID"])
                for w, got in zip(leased, granted, strict=True)}  # fmt: skip
    puts = [(w.key, w.value, lease_of.get(w.key, 0)) for w in writes]
    chunks = [puts[i : i + TXN_KEYS] for i in range(0, len(puts), TXN_KEYS)]
    whole = _txns(remote, reach, chunks)
    made = {key for chunk, ok in zip(chunks, whole, strict=True) if ok for key, _, _ in chunk}
    alone = [put for chunk, ok in zip(chunks, whole, strict=True) if not ok for put in chunk]
    for put, ok in zip(alone, _txns(remote, reach, [[put] for put in alone]), strict=True):
        if ok:
            made.add(put[0])
    unused = [lease_of[w.key] for w in writes if w.key in lease_of and w.key not in made]
    if unused:
        remote.batch([_revoke(reach, i) for i in unused], waiting_for="etcd leases")
    return len(made)


def drop(remote: Remote, reach: Inventory, v2: V2Network) -> Dropped | None:
    """Delete every key and directory of the dump V2, each only if unchanged since; None when
    the v2 API is off there (nothing can be deleted, nor read). The config goes after every
    lease: a deletion cut short leaves no lease without its config (what the import refuses)."""
    argv, label = command_of(DUMP, _params(reach, "delete", None))
    order = sorted(v2.nodes, key=lambda n: n.key == v2.config_key)  # stable: the config last
    nodes = json.dumps([[n.key, n.modified_index, n.dir] for n in order])
    timeout = 4 * REQUEST_TIMEOUT + 60 + len(v2.nodes)
    got = remote.run(argv, stdin=nodes, check=False, timeout=timeout, log_as=label,
                     waiting_for="the v2 keys' deletion")  # fmt: skip
    if got.code == V2_OFF:
        return None
    if got.code not in (FOUND, KEPT):
        raise OverlayctlError(f"{remote.target.name}: deleting etcd's v2 keys failed: {_why(got)}")
    doc = etcdctl.load_json(got.stdout, "v2 delete")
    kept = tuple((str(k.get("key")), str(k.get("why"))) for k in doc.get("kept", []))
    return Dropped(int(doc.get("deleted", 0)), int(doc.get("gone", 0)), kept)
