"""doctor's pure parts: which hosts and pairs it looks at, the data plane it expects, and the
report as people and `jq` read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overlayctl.doctor.dataplane import data_plane
from overlayctl.doctor.model import DoctorReport, Finding
from overlayctl.doctor.report import doctor_doc, doctor_text
from overlayctl.doctor.selection import select
from overlayctl.errors import ExitCode, OverlayctlError
from overlayctl.inventory import parse_inventory


def inventory(tmp_path: Path, backend: str = "vxlan", options: dict | None = None):
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian",
                    "backend": backend, "backend_options": options or {}},
        "hosts": [{"name": "e1", "address": "10.0.0.9", "roles": ["etcd"]},
                  *({"name": f"n{i}", "address": f"10.0.0.{i}", "roles": ["etcd", "node"]}
                    for i in (1, 2, 3))],
    }  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    return inv


def test_select_every_node_and_pair_by_default(tmp_path: Path) -> None:
    hosts, pairs = select(inventory(tmp_path), [], None)
    assert hosts == ["n1", "n2", "n3"]
    assert len(pairs) == 6 and ("n1", "n2") in pairs and ("n2", "n1") in pairs
    assert all(a != b for a, b in pairs)


def test_select_hosts_and_pair(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    assert select(inv, ["n3", "n1"], None) == (["n1", "n3"], [("n1", "n3"), ("n3", "n1")])
    assert select(inv, [], ("n2", "n3")) == (["n2", "n3"], [("n2", "n3"), ("n3", "n2")])


@pytest.mark.parametrize(
    ("names", "pair", "words"),
    [
        (["nope"], None, "'nope' is not in the inventory's node hosts"),
        (["e1"], None, "'e1' is an etcd-only host"),
        ([], ("n1", "n1"), "--pair needs two hosts"),
    ],
)
def test_select_refuses_bad_names(tmp_path: Path, names, pair, words) -> None:
    with pytest.raises(OverlayctlError) as caught:
        select(inventory(tmp_path), names, pair)
    assert words in str(caught.value) and caught.value.code == ExitCode.BAD_INPUT


def test_data_plane_prefers_etcd_config(tmp_path: Path) -> None:
    inv = inventory(tmp_path, "vxlan", {"vni": 7, "port": 4789})
    plane = data_plane(None, inv)
    assert (plane.backend, plane.port, plane.vni, plane.network) == (
        "vxlan", 4789, 7, "172.21.0.0/16")  # fmt: skip
    config = {"Network": "10.40.0.0/16", "SubnetLen": 26,
              "Backend": {"Type": "udp", "Port": 9000}}  # fmt: skip
    plane = data_plane(config, inv)
    assert (plane.backend, plane.port, plane.vni, plane.subnet_len, plane.network) == (
        "udp", 9000, None, 26, "10.40.0.0/16")  # fmt: skip
    assert data_plane({"Backend": {"Type": "host-gw"}}, inv).port is None
    # a config that cannot be the agents' (an unknown type, a string port) falls back
    odd = data_plane({"Backend": {"Type": "wireguard", "Port": "x"}}, inv)
    assert (odd.backend, odd.port) == ("vxlan", 4789)
    assert data_plane({"Backend": {"Type": "vxlan"}}, inventory(tmp_path)).port == 8472


def test_finding_refuses_unknown_check_or_severity() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        Finding("n1", "dns", "error", "m")
    with pytest.raises(ValueError, match="unknown severity"):
        Finding("n1", "agent", "fatal", "m")


def report() -> DoctorReport:
    return DoctorReport(
        hosts=["n1", "n2"],
        findings=[
            Finding("n2", "mtu", "warning", "docker0 MTU 1500, the lease's 1450"),
            Finding(
                "n2",
                "firewall",
                "error",
                "udp 8472 from n1 dropped",
                peer="n1",
                hop="n2 INPUT",
                evidence="-A INPUT -p udp --dport 8472 -j DROP [9 pkts]",
                fix="iptables -D INPUT -p udp --dport 8472 -j DROP",
            ),
            Finding("n1", "agent", "error", "overlay-agent is not running"),
        ],
        notes=["n1: tracefs: not mountable here; counters only"],
    )


def test_report_text_worst_first_and_a_verdict() -> None:
    text = doctor_text(report(), 2)
    lines = text.splitlines()
    assert lines[0] == "n1:"
    n2 = lines.index("n2:")
    firewall = next(i for i, ln in enumerate(lines) if "firewall" in ln and "ERROR" in ln)
    mtu = next(i for i, ln in enumerate(lines) if " mtu " in ln)
    assert n2 < firewall < mtu  # errors before warnings on a host
    assert "  #2 fix: iptables -D INPUT -p udp --dport 8472 -j DROP" in lines
    assert lines[-1] == "doctor: 2 hosts, 2 pairs probed: 2 errors, 1 warning -- FAILED"
    clean = doctor_text(DoctorReport(hosts=["n1", "n2"]), 2)
    assert clean.splitlines()[-1] == "doctor: 2 hosts, 2 pairs probed: no problem found"


def test_report_doc_is_the_documented_shape() -> None:
    doc = json.loads(json.dumps(doctor_doc(report(), 2)))
    first = doc["findings"][0]
    assert set(first) == {"host", "peer", "check", "severity", "message", "evidence", "fix",
                          "hop"}  # fmt: skip
    assert [f["severity"] for f in doc["findings"]] == ["error", "error", "warning"]
    assert doc["hosts"] == ["n1", "n2"] and doc["pairs_probed"] == 2
    assert not report().ok and DoctorReport(findings=[report().findings[0]]).ok
