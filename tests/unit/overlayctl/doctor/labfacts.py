"""Doctor's host facts as gathered for real: fixtures/<backend>/ holds what doctor_facts.py
printed on both hosts of a healthy 2-host lab cluster (`overlayctl lab up --hosts 2`, init, one
busybox container per host), per backend, and the leases etcd held. Tests start from these and
inject one fault each, so a check is judged on real `iptables-save -c`, `ip -j` and
`bridge -j fdb` output, not on hand-made shapes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from overlayctl.doctor.context import Context
from overlayctl.doctor.dataplane import data_plane
from overlayctl.doctor.facts import HostFacts, parse_facts
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory import parse_inventory

FIXTURES = Path(__file__).parent / "fixtures"
NOW = 1796210800.0  # a little after the fixtures were gathered (their "time")


@cache
def _raw(backend: str, host: str) -> str:
    return (FIXTURES / backend / f"{host}.json").read_text()


def doc(backend: str, host: str) -> dict[str, Any]:
    """A fresh copy of the script's JSON document, for a test to edit."""
    return json.loads(_raw(backend, host))


def leases(backend: str) -> list[LeaseInfo]:
    return [LeaseInfo(**x) for x in json.loads((FIXTURES / backend / "leases.json").read_text())]


def inventory(backend: str, tmp: Path = Path("/inv")):
    spec = {
        "cluster": {"name": "dfacts", "network": "172.21.0.0/16", "os": "debian",
                    "backend": backend},
        "hosts": [{"name": "node1", "address": "192.168.255.154", "iface": "eth0"},
                  {"name": "node2", "address": "192.168.255.155", "iface": "eth0"}],
    }  # fmt: skip
    inv, _ = parse_inventory(spec, tmp, source=tmp / "cluster.yaml")
    return inv


def context(
    backend: str = "vxlan",
    docs: dict[str, dict[str, Any]] | None = None,
    lease_list: list[LeaseInfo] | None = None,
    *,
    known: bool = True,
) -> Context:
    """The lab's context with DOCS (host -> edited document) in place of the fixtures."""
    inv = inventory(backend)
    config = {"Network": "172.21.0.0/16", "Backend": {"Type": backend}}
    ctx = Context(inv=inv, plane=data_plane(config, inv), hosts=["node1", "node2"], pairs=[],
                  leases=leases(backend) if lease_list is None else lease_list,
                  leases_known=known, network_config=config, now=NOW)  # fmt: skip
    for host in ctx.hosts:
        given = (docs or {}).get(host)
        ctx.facts[host] = parse_facts(host, json.dumps(given) if given else _raw(backend, host))
    return ctx


def facts(backend: str, host: str) -> HostFacts:
    return parse_facts(host, _raw(backend, host))


def add_rules(d: dict[str, Any], table: str, *lines: str, first: bool = False) -> None:
    """Add `-A ...` LINES (with counters) to TABLE's section of d's iptables-save text."""
    text = d["iptables_save"]["out"]
    head = f"*{table}\n"
    start = text.index(head)
    # FIRST: before the table's first rule (after the chain declarations), else at its end.
    at = text.index("\n[", start) + 1 if first else text.index("COMMIT", start)
    d["iptables_save"]["out"] = text[:at] + "".join(x + "\n" for x in lines) + text[at:]


def edit(d: dict[str, Any], old: str, new: str) -> None:
    text = d["iptables_save"]["out"]
    assert old in text, old
    d["iptables_save"]["out"] = text.replace(old, new)
