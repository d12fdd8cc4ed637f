"""Rules that span fields and hosts: duplicates, overlay vs underlay, capacity, etcd members.

`check_inventory` raises BadInput on the first error and returns the warnings.
`check_ssh_files` checks the local SSH files (kept apart: `render` needs none of them).
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from overlayctl.errors import BadInput
from overlayctl.inventory.model import Host, Inventory, Ssh
from overlayctl.paths import RESERVED_HOST_NAMES


def check_inventory(inv: Inventory) -> list[str]:
    """Validate what no single field can tell. Returns warnings; raises BadInput on errors."""
    _unique(inv.hosts)
    _overlay_vs_underlay(inv)
    _capacity(inv)
    if inv.cluster.backend == "host-gw":
        _one_segment(inv.nodes)
    return _members(inv) + _ssh_warnings(inv.ssh)


def _unique(hosts: tuple[Host, ...]) -> None:
    names: dict[str, Host] = {}
    addresses: dict[object, Host] = {}
    for host in hosts:
        if host.name.lower() in RESERVED_HOST_NAMES:
            raise BadInput(f"{host.label}.name: {host.name!r} is reserved for etcd's own "
                           "identities (its admin user, its peers); rename the host")  # fmt: skip
        first = names.setdefault(host.name.lower(), host)
        if first is not host:
            raise BadInput(f"{host.label}.name: {host.name!r} is already used by {first.label}")
        first = addresses.setdefault(host.address, host)
        if first is not host:
            raise BadInput(f"{host.label}.address: {host.address} is already used by {first.label}")


def _overlay_vs_underlay(inv: Inventory) -> None:
    net = inv.cluster.network
    for host in inv.hosts:
        if host.address in net:
            raise BadInput(
                f"{host.label}.address: {host.address} is inside the overlay cluster.network {net}"
            )
        if host.ifcfg is None:
            continue
        underlay = host.underlay
        if underlay is not None and underlay.overlaps(net):
            raise BadInput(
                f"{host.label}.ifcfg.prefix: the underlay subnet {underlay} overlaps the overlay "
                f"cluster.network {net}"
            )
        for i, server in enumerate(host.ifcfg.dns):
            if server in net:
                raise BadInput(
                    f"{host.label}.ifcfg.dns[{i}]: {server} is inside the overlay "
                    f"cluster.network {net}"
                )


def _capacity(inv: Inventory) -> None:
    c = inv.cluster
    wanted = len(inv.nodes)
    if wanted > c.subnet_count:
        raise BadInput(
            f"cluster.network: {wanted} hosts run the agent but only {c.subnet_count} subnets of "
            f"/{c.subnet_len} lie between SubnetMin {c.subnet_min} and SubnetMax {c.subnet_max} "
            f"of {c.network}"
        )


def _one_segment(nodes: tuple[Host, ...]) -> None:
    """host-gw routes subnets via each peer's address: every node must share one L2 segment."""
    declared = [(h, h.underlay) for h in nodes if h.underlay is not None]
    for ref, segment in declared:
        for host in nodes:
            if host.address not in segment:
                raise BadInput(
                    f"{host.label}.address: {host.address} is not on {ref.label}'s segment "
                    f"{segment}; the host-gw backend needs every node on one L2 segment "
                    "(use vxlan across segments)"
                )


def _members(inv: Inventory) -> list[str]:
    members = inv.etcd_members
    if not members:
        raise BadInput("hosts: no host has the etcd role; give at least one host roles: [etcd]")
    warnings = []
    if len(members) % 2 == 0:
        warnings.append(
            f"hosts: {len(members)} etcd members is an even number: it tolerates no more failed "
            f"members than {len(members) - 1} would; an odd number is recommended"
        )
    if not inv.nodes:
        warnings.append("hosts: no host has the node role, so no host runs the overlay agent")
    return warnings


def _ssh_warnings(ssh: Ssh) -> list[str]:
    if ssh.user != "root" and not ssh.sudo:
        return [
            f"ssh.user: {ssh.user!r} is not root and ssh.sudo is false; writing system files "
            "will fail unless that user may write them"
        ]
    return []


def check_ssh_files(ssh: Ssh) -> list[str]:
    """The private key must be a readable file open to nobody else (OpenSSH refuses it too,
    group-readable included); known_hosts, if present, a readable file. Returns warnings."""
    warnings: list[str] = []
    if ssh.key is not None:
        _readable_file(ssh.key, "ssh.key", "private key")
        mode = stat.S_IMODE(ssh.key.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            how = "readable by" if mode & (stat.S_IRGRP | stat.S_IROTH) else "open to"
            raise BadInput(
                f"ssh.key: {ssh.key} is {how} others (mode {mode:04o}); "
                f"run chmod 600 {shlex.quote(str(ssh.key))}"
            )
    if ssh.known_hosts.exists():
        _readable_file(ssh.known_hosts, "ssh.known_hosts", "known_hosts file")
    else:
        warnings.append(
            f"ssh.known_hosts: {ssh.known_hosts} does not exist yet; first contact needs "
            "--accept-new-host-keys"
        )
    return warnings


def _readable_file(path: Path, field: str, what: str) -> None:
    if not path.exists():
        raise BadInput(f"{field}: {what} {path} does not exist")
    if not path.is_file():
        raise BadInput(f"{field}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise BadInput(f"{field}: {what} {path} is not readable")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise BadInput(f"{field}: cannot read {path}: {exc.strerror}") from None
