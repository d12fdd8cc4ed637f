"""`overlayctl doctor` with a real firewalld (issue #18: "with and without firewalld"): a 3-host
vxlan lab whose Debian hosts run Debian's firewalld 1.3 (its packages fetched by this machine's
apt and installed on the hosts: tests/e2e/lab_debs.py), started before `init`.

init installs overlayctl's two firewalld policies there (README "Host firewall"): without them
firewalld's default zone drops etcd's peers and init never gets a healthy etcd. Then doctor is
ok on the healthy cluster, and each real firewalld fault, made at runtime on ONE host as an
admin's `firewall-cmd` would, is an `error` naming that host and peer, whose fix, run on the host
exactly as printed, makes doctor ok again. Every fault is also undone in a `finally` by
`firewall-cmd --reload` (the permanent set is untouched by a runtime change).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.lab import state
from tests.e2e import lab_debs
from tests.e2e.conftest import init_or_fail
from tests.e2e.faults import assert_healthy, doctor_json, errors, host_change, summary
from tests.e2e.promises import IMAGE, inventory, leases, run, sh
from tests.labtools import full_lab, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
PORT = 8472  # vxlan
RELOAD = "firewall-cmd --reload"


def rich(verb: str, where: str, rule: str) -> str:
    """A runtime-only firewall-cmd change of one rich rule."""
    return f"firewall-cmd {where} --{verb}-rich-rule={shlex.quote(rule)}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path]]:
    with full_lab(3, "fwd") as lab:
        debs = lab_debs.fetch(Path(lab.template), ("firewalld",))
        started = time.monotonic()
        lab_debs.install(lab, THREE, debs)
        for host in THREE:  # the package starts and enables it, as on any Debian host
            assert sh(lab, host, "firewall-cmd --state").strip() == "running"
        installed = time.monotonic() - started
        three = inventory(lab, "three", THREE)
        init_or_fail(lab, three)
        print(f"firewalld installed on 3 hosts in {installed:.1f} s, init in "
              f"{time.monotonic() - started - installed:.1f} s")  # fmt: skip
        yield lab, three


def test_init_installs_overlayctls_policies_and_the_overlay_works(cluster) -> None:
    lab, three = cluster
    for host in THREE:
        policies = sh(lab, host, "firewall-cmd --get-policies").split()
        assert {hp.FIREWALLD_HOST_POLICY, hp.FIREWALLD_FORWARD_POLICY} <= set(policies), host
        assert sh(lab, host, "firewall-cmd --get-default-zone").strip() == "public"
    result, doc = run(lab, "verify", "-i", str(three), *IMAGE)
    assert result.returncode == 0 and all(p["ok"] and p["mtu_ok"] for p in doc["pairs"]), doc


def test_doctor_is_ok_on_the_healthy_firewalld_cluster(cluster) -> None:
    lab, three = cluster
    for _ in range(2):
        started = time.monotonic()
        result, doc = doctor_json(lab, three)
        assert result.returncode == 0 and time.monotonic() - started <= 15
        assert_healthy(doc)


def test_a_zone_rule_overlayctls_policy_overrides_is_no_false_alarm(cluster) -> None:
    """A drop of the port in the underlay's zone comes after overlayctl's policy has accepted
    it (firewalld runs policies of negative priority first): the probes get through."""
    lab, three = cluster
    drop = f'rule family="ipv4" port port="{PORT}" protocol="udp" drop'
    with host_change(lab, "node3", rich("add", "--zone=public", drop), RELOAD):
        assert_healthy(doctor_json(lab, three)[1])


def run_fix(lab: state.LabState, host: str, fix: str) -> None:
    done = on(lab, host, fix)
    assert done.returncode == 0, (fix, done.stdout, done.stderr)


def test_a_peers_port_dropped_by_firewalld_names_host_peer_and_a_working_fix(cluster) -> None:
    """node1's accept of node2's VXLAN port taken out of overlayctl's host policy: the
    policy's catch-all drop then takes node2's frames."""
    lab, three = cluster
    node1 = lab.host("node1").address
    accept = (f'rule priority="-20" family="ipv4" source address="{node1}" '
              f'port port="{PORT}" protocol="udp" accept')  # fmt: skip
    where = f"--policy={hp.FIREWALLD_HOST_POLICY}"
    with host_change(lab, "node2", rich("remove", where, accept), RELOAD):
        _, doc = doctor_json(lab, three)
        (f,) = [f for f in errors(doc, "firewall") if f["host"] == "node2"] or [None]
        assert f is not None, summary(doc)
        assert (f["peer"], f["hop"]) == ("node1", "node2 INPUT"), summary(doc)
        assert f"{PORT}/udp from node1" in f["message"]
        assert not [e for e in errors(doc, "firewall") if e["host"] != "node2"], summary(doc)
        under = [e for e in errors(doc, "underlay") if e["host"] == "node2"]
        assert [(e["peer"], e["hop"]) for e in under] == [("node1", "node2 input")], summary(doc)
        assert f["fix"].startswith(f"firewall-cmd --permanent {where} --add-rich-rule=")
        run_fix(lab, "node2", f["fix"])
        assert_healthy(doctor_json(lab, three)[1])


def test_a_rich_rule_dropping_forwarded_overlay_traffic_is_a_firewall_error(cluster) -> None:
    """A rule in a policy ahead of overlayctl's forward accept drops node2's containers'
    traffic into node1: verify fails node2 -> node1, doctor names node1, FORWARD and node2."""
    lab, three = cluster
    subnet = leases(run(lab, "status", "-i", str(three))[1])
    drop = f'rule priority="-30" family="ipv4" source address="{subnet["node2"]}" drop'
    where = f"--policy={hp.FIREWALLD_FORWARD_POLICY}"
    with host_change(lab, "node1", rich("add", where, drop), RELOAD):
        result, doc = run(lab, "verify", "-i", str(three), *IMAGE)
        broken = {(p["from"], p["to"]) for p in doc["pairs"] if not p["ok"]}
        assert result.returncode == 1 and ("node2", "node1") in broken, doc
        _, doc = doctor_json(lab, three)
        found = [f for f in errors(doc, "firewall") + errors(doc, "forwarding")
                 if f["host"] == "node1"]  # fmt: skip
        assert [(f["peer"], f["hop"]) for f in found] == [("node2", "node1 FORWARD")], summary(doc)
        assert found[0]["fix"] == (f"firewall-cmd --permanent {where} --remove-rich-rule="
                                   f"{shlex.quote(drop)} && firewall-cmd --reload")  # fmt: skip
        run_fix(lab, "node1", found[0]["fix"])
        assert_healthy(doctor_json(lab, three)[1])
