"""lease, etcd, mtu (configuration) and rp_filter on the real facts of a healthy 2-host lab,
each with one fault put in as etcd, the host's clock, docker or the kernel would show it."""

from __future__ import annotations

import dataclasses

import pytest

from overlayctl.doctor.checks import etcd, lease, mtu_config, rp_filter
from overlayctl.etcd.cluster import LeaseInfo
from tests.unit.overlayctl.doctor.labfacts import context, doc, leases

BACKENDS = ["vxlan", "host-gw", "udp"]
DAY = 86400.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check", [lease, etcd, mtu_config, rp_filter])
def test_a_healthy_lab_cluster_has_no_finding(check, backend: str) -> None:
    assert check.run(context(backend)) == []


# -- lease ------------------------------------------------------------------------------------


def test_duplicate_subnet_and_duplicate_public_ip() -> None:
    node1, node2 = sorted(leases("vxlan"), key=lambda x: str(x.host))
    # node1's agent leased node2's subnet too: one subnet twice, and node1's PublicIP twice.
    twin = dataclasses.replace(node2, public_ip=node1.public_ip, host="node1")
    twice, two = lease.run(context("vxlan", lease_list=[node1, node2, twin]))
    assert (twice.host, twice.peer, twice.check, twice.severity) == ("node2", "node1", "lease",
                                                                     "error")  # fmt: skip
    assert f"subnet {node2.subnet} is leased twice" in twice.message
    assert (two.host, two.severity) == ("node1", "error") and "holds 2 leases" in two.message
    other = dataclasses.replace(node1, subnet="172.21.99.0/24")
    (f,) = lease.run(context("vxlan", lease_list=[node1, node2, other]))
    assert (f.host, f.severity) == ("node1", "error") and "holds 2 leases" in f.message
    assert "etcdctl del /coreos.com/network/subnets/172.21.99.0-24" in f.fix


def test_a_lease_from_outside_and_a_node_without_a_lease() -> None:
    node1, _ = sorted(leases("vxlan"), key=lambda x: str(x.host))
    stranger = LeaseInfo("172.21.200.0/24", "10.66.0.7", "vxlan", 80000, None)
    found = lease.run(context("vxlan", lease_list=[node1, stranger]))
    assert sorted((f.host, f.severity, f.message.split(" ")[0]) for f in found) == [
        ("etcd", "warning", "lease"), ("node2", "error", "no")]  # fmt: skip
    assert lease.run(context("vxlan", lease_list=[node1], known=False)) == []


# -- etcd -------------------------------------------------------------------------------------


def test_no_endpoint_reachable_and_tls_refused() -> None:
    d = doc("vxlan", "node2")
    for p in d["etcd"]:
        p.update(tcp=False, tls=None, error="TimeoutError: timed out")
    (f,) = etcd.run(context("vxlan", {"node2": d}))
    assert (f.host, f.check, f.severity) == ("node2", "etcd", "error")
    assert "reaches none" in f.message and "timed out" in f.evidence
    for p in d["etcd"]:
        p.update(tcp=True, tls=False, error="SSLError: [SSL: TLSV1_ALERT_UNKNOWN_CA]")
    (f,) = etcd.run(context("vxlan", {"node2": d}))
    assert "refuse this host's TLS identity" in f.message and f.fix == "overlayctl certs rotate"
    d["etcd"][1].update(tls=True, error="")
    assert etcd.run(context("vxlan", {"node2": d})) == []  # one endpoint is enough


@pytest.mark.parametrize(
    ("clock", "severity", "words"),
    [("2027-03-03", "error", "has expired"), ("2026-12-01", "error", "not valid yet"),
     ("2027-02-20", "warning", "expires in 10 days")],
)  # fmt: skip
def test_the_client_certificate_against_the_hosts_clock(clock: str, severity: str, words: str):
    from datetime import UTC, datetime

    d = doc("vxlan", "node1")
    d["time"] = datetime.fromisoformat(clock).replace(tzinfo=UTC).timestamp() + 11 * 3600
    (f,) = etcd.run(context("vxlan", {"node1": d}))
    assert (f.host, f.severity) == ("node1", severity) and words in f.message
    assert "the host's clock" in f.evidence


# -- mtu (configuration) ----------------------------------------------------------------------


def test_docker_not_using_the_agents_mtu() -> None:
    d = doc("vxlan", "node1")
    d["dockerd_args"] = [a for a in d["dockerd_args"] if not a.startswith("--mtu")]
    d["daemon_json"] = {"mtu": 1500}
    for link in d["links"]:
        if link["ifname"] == "docker0":
            link["mtu"] = 1500
    d["containers"][0]["eth0_mtu"] = 1500
    found = mtu_config.run(context("vxlan", {"node1": d}))
    assert [(f.host, f.check, f.severity) for f in found] == [("node1", "mtu", "error")] * 3
    assert [f.message.split(" is ")[0] for f in found] == [
        "docker0's MTU",
        "docker's MTU (/etc/docker/daemon.json)",
        "container dtest's eth0",
    ]
    assert "FLANNEL_MTU 1450" in found[0].message


def test_docker0_without_containers_keeps_1500_and_is_no_finding() -> None:
    """A bridge takes its ports' smallest MTU: an empty docker0 stays at 1500 and carries
    nothing (seen on every healthy lab host before verify ran): no finding. With a port, it is."""
    d = doc("vxlan", "node1")
    for link in d["links"]:
        if link["ifname"] == "docker0":
            link["mtu"] = 1500
    d["links"] = [x for x in d["links"] if x.get("master") != "docker0"]
    d["containers"] = []
    assert mtu_config.run(context("vxlan", {"node1": d})) == []
    d["links"].append({"ifname": "veth0", "master": "docker0", "mtu": 1500})
    (f,) = mtu_config.run(context("vxlan", {"node1": d}))
    assert "docker0's MTU is 1500" in f.message and f.severity == "error"


def test_an_overlay_device_smaller_than_flannel_mtu_is_a_warning() -> None:
    d = doc("udp", "node2")
    next(x for x in d["links"] if x["ifname"] == "flannel0")["mtu"] = 1400
    (f,) = mtu_config.run(context("udp", {"node2": d}))
    assert (f.host, f.severity) == ("node2", "warning") and "flannel0's MTU is 1400" in f.message


# -- rp_filter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["Invalid argument", "Invalid cross-device link"])
def test_strict_rp_filter_refusing_the_overlay_is_an_error_naming_the_peer(error: str) -> None:
    d = doc("vxlan", "node1")
    d["sysctl"]["net.ipv4.conf.all.rp_filter"] = "1"
    refused = next(g for g in d["route_gets"] if g["kind"] == "rp-overlay")
    refused.update(route=None, error=f"RTNETLINK answers: {error}")
    (f,) = rp_filter.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.check, f.severity) == ("node1", "node2", "rp_filter", "error")
    assert "flannel.1" in f.message and "effective 1" in f.evidence
    assert "net.ipv4.conf.flannel.1.rp_filter=2" in f.fix


def test_strict_rp_filter_whose_lookups_pass_is_no_finding() -> None:
    d = doc("vxlan", "node1")
    d["sysctl"]["net.ipv4.conf.all.rp_filter"] = "1"
    assert rp_filter.run(context("vxlan", {"node1": d})) == []
    # EINVAL without strict mode in effect is another martian, not rp_filter's refusal.
    d["sysctl"]["net.ipv4.conf.all.rp_filter"] = "2"
    refused = next(g for g in d["route_gets"] if g["kind"] == "rp-overlay")
    refused.update(route=None, error="RTNETLINK answers: Invalid argument")
    assert rp_filter.run(context("vxlan", {"node1": d})) == []
