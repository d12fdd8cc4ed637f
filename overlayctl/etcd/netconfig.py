"""The network config in etcd: read it (to compare with the inventory's before any phase runs),
and write it only if absent, or replace it when asked (--force), in a transaction.
"""

from __future__ import annotations

import json
from typing import Any

from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config, network_config_key
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Command, Remote, RunResult, command_of

GET_IF_RUNNING = HostScript("etcd-get-if-running.sh")


def read_command(inv: Inventory) -> Command:
    """Read the network config through this member, only where etcd runs (a fresh host has no
    etcd to wait 5 s for): for a batch with the host's facts."""
    return command_of(GET_IF_RUNNING, *etcdctl.get_value(inv, network_config_key(inv)))


def parse_current(got: RunResult) -> dict[str, Any] | None:
    """Pure: read_command's RESULT -> the config in etcd; None when etcd is not running there,
    does not answer, or holds none. Never raises: it only informs a plan."""
    if got.code != 0:
        return None
    try:
        raw = etcdctl.parse_get(got.stdout)
        value = json.loads(raw) if raw is not None else None
    except (ValueError, OverlayctlError):
        return None
    return value if isinstance(value, dict) else None


def current(remote: Remote, inv: Inventory) -> dict[str, Any] | None:
    """The network config in etcd now, through REMOTE (an etcd member); see parse_current."""
    argv, label = read_command(inv)
    return parse_current(remote.run(argv, check=False, timeout=30, log_as=label))


def ensure(remote: Remote, inv: Inventory, force: bool) -> str:
    """Write the network config if absent; never replace a different one without FORCE.

    Returns "created", "unchanged" or "replaced".
    """
    key = network_config_key(inv)
    want = network_config(inv)
    value = json.dumps(want, separators=(",", ":"))
    current = etcdctl.parse_get(remote.run(etcdctl.get_value(inv, key)).stdout)
    if current is not None:
        try:
            same = json.loads(current) == want
        except json.JSONDecodeError:
            same = False
        if same:
            return "unchanged"
        if not force:
            raise Conflict(
                f"etcd key {key} holds a different network config ({current}); the inventory "
                f"wants {value}. Re-run with --force to replace it"
            )
    stdin = etcdctl.txn_stdin(key, value, only_if_absent=current is None)
    result = remote.run(etcdctl.txn(inv), stdin=stdin)
    if not etcdctl.parse_txn_succeeded(result.stdout):
        raise Conflict(f"etcd key {key} was written by someone else meanwhile; re-run init")
    return "created" if current is None else "replaced"
