"""README promises on a host-gw cluster of its own (issue #14): the backend end to end (verify,
status, the kernel routes via the peers' PublicIPs, a no-change re-run), then `init` refusing a
different network config in etcd (exit 4, naming --force) and `init --force` replacing it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.e2e.promises import IMAGE, inventory, leases, ok, own_lab, run, sh
from tests.labtools import cli

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
HOST_GW = {"Network": "172.21.0.0/16", "Backend": {"Type": "host-gw"}}


@pytest.fixture(scope="module")
def hostgw() -> Iterator[tuple[state.LabState, Path]]:
    with own_lab(3, "pg") as lab:
        three = inventory(lab, "three", THREE, backend="host-gw")
        ok(cli(lab, "init", "-i", str(three)))
        yield lab, three


def test_host_gw_end_to_end(hostgw) -> None:
    lab, three = hostgw
    result, report = run(lab, "verify", "-i", str(three), *IMAGE)
    assert result.returncode == 0 and report["ok"] is True and report["errors"] == [], report
    assert sorted((p["from"], p["to"]) for p in report["pairs"]) == [
        (a, b) for a in THREE for b in THREE
    ]
    assert all(p["ok"] and p["mtu_ok"] for p in report["pairs"])

    result, doc = run(lab, "status", "-i", str(three))
    assert result.returncode == 0 and doc["ok"] is True and doc["healthy"] is True, doc
    assert doc["network_config"] == HOST_GW
    address = {h: lab.host(h).address for h in THREE}
    assert sorted((le["host"], le["public_ip"], le["backend"]) for le in doc["leases"]) == [
        (h, address[h], "host-gw") for h in THREE
    ]
    # host-gw: the interface's MTU (no encapsulation), and a route to every peer
    assert [(h["name"], h["mtu"], h["bip_ok"], h["missing_routes"]) for h in doc["hosts"]] == [
        (h, 1500, True, []) for h in THREE
    ]
    subnet = leases(doc)
    for host in THREE:
        routes = {line.strip() for line in sh(lab, host, "ip -4 route show").splitlines()}
        for peer in THREE:
            if peer != host:
                assert f"{subnet[peer]} via {address[peer]} dev eth0" in routes, (host, routes)
        assert "flannel" not in sh(lab, host, "ip -o link show")  # no overlay device at all

    again, rerun = run(lab, "init", "-i", str(three))
    assert again.returncode == 0 and rerun["ok"] is True, again.stdout + again.stderr
    assert rerun["changes"] == 0 and rerun["network_config"] == "unchanged"
    assert rerun["hosts"] == {h: {"changes": 0} for h in THREE}


def narrower(doc: dict) -> dict:
    """Cluster keys that change the network config JSON but keep every lease inside it: the
    range ends at the highest leased subnet (or starts at the lowest one)."""
    nets = sorted(ipaddress.ip_network(s) for s in leases(doc).values())
    if nets[-1].network_address != ipaddress.ip_address("172.21.255.0"):  # the default max
        return {"subnet_max": str(nets[-1].network_address)}
    assert nets[0].network_address != ipaddress.ip_address("172.21.1.0"), nets  # the default min
    return {"subnet_min": str(nets[0].network_address)}


def test_init_refuses_a_different_network_config_and_force_replaces_it(hostgw) -> None:
    lab, three = hostgw
    before = run(lab, "status", "-i", str(three))[1]
    assert before["network_config"] == HOST_GW
    keys = narrower(before)
    changed = inventory(lab, "narrower", THREE, backend="host-gw", **keys)
    field, value = next(iter(keys.items()))
    wanted = {"Network": "172.21.0.0/16", {"subnet_max": "SubnetMax", "subnet_min": "SubnetMin"}[
        field]: value, "Backend": {"Type": "host-gw"}}  # fmt: skip
    try:
        refused, doc = run(lab, "init", "-i", str(changed))
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert doc["ok"] is False
        (error,) = doc["errors"]
        message = error["message"]
        assert "--force" in message
        assert json.dumps(HOST_GW, separators=(",", ":")) in message  # what etcd holds
        assert json.dumps(wanted, separators=(",", ":")) in message  # what the inventory wants
        assert f"overlayctl: error: {message}" in refused.stderr
        assert run(lab, "status", "-i", str(three))[1]["network_config"] == HOST_GW  # kept

        forced, doc = run(lab, "init", "-i", str(changed), "--force")
        assert forced.returncode == 0 and doc["ok"] is True, forced.stdout + forced.stderr
        assert doc["network_config"] == "replaced"
        status = run(lab, "status", "-i", str(changed))[1]
        assert status["network_config"] == wanted
        assert leases(status) == leases(before)  # every lease still inside the range
    finally:  # the cluster's own config back, as the module's first test left it
        back, doc = run(lab, "init", "-i", str(three), "--force")
    assert back.returncode == 0 and doc["network_config"] == "replaced", back.stdout + back.stderr
    result, after = run(lab, "status", "-i", str(three))
    assert result.returncode == 0 and after["network_config"] == HOST_GW, after
