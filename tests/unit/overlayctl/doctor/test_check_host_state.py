"""forwarding, routes, bridge and agent on the real facts of a healthy 2-host lab (per backend),
each with one fault put in as the kernel, systemd or docker would show it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from overlayctl.doctor.checks import agent, bridge, forwarding, routes
from tests.unit.overlayctl.doctor.labfacts import context, doc, edit, leases

BACKENDS = ["vxlan", "host-gw", "udp"]


def healthy_udp(d: dict) -> dict:
    """udp's node1 fixture still holds host-gw's route from the backend change before it."""
    d["routes"] = [r for r in d["routes"] if not (r["dst"] == "172.21.73.0/24" and "gateway" in r)]
    return d


def ctx_for(backend: str, **docs: dict):
    if backend == "udp" and "node1" not in docs:
        docs["node1"] = healthy_udp(doc("udp", "node1"))
    return context(backend, docs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check", [forwarding, routes, bridge, agent])
def test_a_healthy_lab_host_has_no_finding(check, backend: str) -> None:
    assert check.run(ctx_for(backend)) == []


# -- forwarding -------------------------------------------------------------------------------


def test_ip_forward_off_is_an_error_on_that_host() -> None:
    d = doc("vxlan", "node2")
    d["sysctl"]["net.ipv4.ip_forward"] = "0"
    (f,) = forwarding.run(context("vxlan", {"node2": d}))
    assert (f.host, f.peer, f.check, f.severity) == ("node2", None, "forwarding", "error")
    assert "ip_forward=1" in f.fix


def test_forward_policy_drop_without_flannel_fwd_names_the_policy() -> None:
    d = doc("vxlan", "node1")
    edit(d, ":FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER", ":FORWARD DROP [5:420]\n"
         ":OUTPUT ACCEPT [0:0]\n:DOCKER")  # fmt: skip
    assert forwarding.run(context("vxlan", {"node1": d})) == []  # FLANNEL-FWD accepts it
    edit(d, '[0:0] -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD\n', "")
    (f,) = forwarding.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert "filter FORWARD policy DROP" in f.evidence and "overlay-agent" in f.fix


def test_dockers_isolation_chain_dropping_overlay_traffic_is_a_forwarding_error() -> None:
    d = doc("host-gw", "node2")
    # docker 28 drops what leaves docker0 for another interface unless it is docker's own.
    edit(d, "[0:0] -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
         "[0:0] -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n"
         "[31:2604] -A DOCKER-ISOLATION-STAGE-2 ! -o docker0 -j DROP")  # fmt: skip
    (f,) = forwarding.run(context("host-gw", {"node2": d}))
    assert (f.host, f.peer, f.severity) == ("node2", "node1", "error")
    assert "DOCKER-ISOLATION-STAGE-2" in f.message and "DOCKER-USER" in f.fix


# -- routes -----------------------------------------------------------------------------------


def test_a_deleted_vxlan_route_and_fdb_entry_name_the_peer_and_the_commands() -> None:
    d = doc("vxlan", "node1")
    d["routes"] = [r for r in d["routes"] if r["dst"] != "172.21.73.0/24"]
    d["fdb"]["flannel.1"] = []
    (f,) = routes.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.check, f.severity) == ("node1", "node2", "routes", "error")
    assert "no route to 172.21.73.0/24" in f.message and "no fdb entry" in f.message
    assert "bridge fdb append d2:96:a0:ef:a3:b8 dev flannel.1 dst 192.168.255.155" in f.fix


def test_a_deleted_neighbour_is_missing_and_a_gone_lease_leaves_stale_entries() -> None:
    d = doc("vxlan", "node1")
    d["neigh"] = [n for n in d["neigh"] if n["dev"] != "flannel.1"]
    (f,) = routes.run(context("vxlan", {"node1": d}))
    assert f.peer == "node2" and "no neighbour 172.21.73.0" in f.message
    only_node1 = [x for x in leases("vxlan") if x.host == "node1"]
    found = routes.run(context("vxlan", lease_list=only_node1))
    stale = sorted(x.message for x in found if x.host == "node1")
    assert [x.severity for x in found] == ["warning"] * 3 and len(stale) == 3
    assert stale[0].startswith("stale fdb d2:96:a0:ef:a3:b8 dst 192.168.255.155")


def test_host_gw_route_missing_and_peer_behind_a_router() -> None:
    d = doc("host-gw", "node2")
    d["routes"] = [r for r in d["routes"] if r.get("gateway") != "192.168.255.154"]
    (f,) = routes.run(context("host-gw", {"node2": d}))
    assert (f.host, f.peer) == ("node2", "node1") and f.fix.startswith("ip route replace")
    d = doc("host-gw", "node2")
    d["route_gets"][0]["route"]["gateway"] = "192.168.254.1"
    (f,) = routes.run(context("host-gw", {"node2": d}))
    assert (f.host, f.peer, f.severity) == ("node2", "node1", "error") and "L2" in f.message


def test_udp_without_the_network_route_and_with_a_shadowing_host_gw_route() -> None:
    d = healthy_udp(doc("udp", "node1"))
    d["routes"] = [r for r in d["routes"] if r.get("dev") != "flannel0"]
    (f,) = routes.run(context("udp", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert "172.21.0.0/16" in f.message
    (f,) = routes.run(context("udp"))  # the fixture as gathered after host-gw -> udp
    assert (f.host, f.severity) == ("node1", "warning") and "not flannel0's" in f.message


def test_routes_say_nothing_when_etcd_was_not_read() -> None:
    d = doc("vxlan", "node1")
    d["routes"] = []
    assert routes.run(context("vxlan", {"node1": d}, known=False)) == []


# -- bridge -----------------------------------------------------------------------------------


def test_docker_stopped_and_docker0_off_the_lease() -> None:
    d = doc("vxlan", "node2")
    d["docker_unit"].update(ActiveState="inactive", SubState="dead")
    for a in d["addrs"]:
        if a["ifname"] == "docker0":
            a["addr_info"][0]["local"] = "172.17.0.1"
            a["addr_info"][0]["prefixlen"] = 16
    found = bridge.run(context("vxlan", {"node2": d}))
    assert [(f.host, f.severity) for f in found] == [("node2", "error")] * 2
    assert "not running" in found[0].message
    assert "172.17.0.1/16, not the lease's 172.21.73.1/24" in found[1].message


def test_a_container_on_a_user_defined_network_outside_the_lease_is_a_warning() -> None:
    d = doc("vxlan", "node1")
    d["containers"][0]["networks"] = {"backend": {"ip": "172.18.0.2", "prefix": 16,
                                                  "gateway": "172.18.0.1"}}  # fmt: skip
    (f,) = bridge.run(context("vxlan", {"node1": d}))
    assert (f.host, f.severity) == ("node1", "warning") and "'backend'" in f.message


# -- agent ------------------------------------------------------------------------------------


def test_agent_stopped_not_ready_and_restarting() -> None:
    d = doc("vxlan", "node1")
    d["agent_unit"].update(ActiveState="activating", SubState="auto-restart", Result="exit-code")
    (f,) = agent.run(context("vxlan", {"node1": d}))
    assert (f.host, f.severity) == ("node1", "error") and "not running" in f.message
    d = doc("vxlan", "node1")
    body = {"ready": False, "phase": "leasing", "waiting_for": ["lease", "dataplane"],
            "subnet": None, "detail": "etcd unreachable"}  # fmt: skip
    d["readyz"] = {"status": 503, "body": json.dumps(body)}
    d["agent_unit"]["NRestarts"] = "7"
    d["agent_unit"]["ActiveEnterTimestampMonotonic"] = str(int((d["uptime"] - 20) * 1e6))
    found = agent.run(context("vxlan", {"node1": d}))
    assert [f.severity for f in found] == ["error", "error"]
    assert "restarting in a loop (7 restarts" in found[0].message
    assert "waiting for lease, dataplane: etcd unreachable" in found[1].message


def test_own_lease_gone_or_expiring() -> None:
    others = [x for x in leases("vxlan") if x.host != "node1"]
    (f,) = agent.run(context("vxlan", lease_list=others))
    assert (f.host, f.severity) == ("node1", "error") and "not in etcd" in f.message
    ls = [dataclasses.replace(x, expires_in_s=900) if x.host == "node1" else x
          for x in leases("vxlan")]  # fmt: skip
    (f,) = agent.run(context("vxlan", lease_list=ls))
    assert (f.host, f.severity) == ("node1", "error") and "expires in 900 s" in f.message
    ls = [dataclasses.replace(x, expires_in_s=2400) if x.host == "node1" else x
          for x in leases("vxlan")]  # fmt: skip
    assert [f.severity for f in agent.run(context("vxlan", lease_list=ls))] == ["warning"]
    ls = [dataclasses.replace(x, expires_in_s=3500) if x.host == "node1" else x
          for x in leases("vxlan")]  # fmt: skip
    assert agent.run(context("vxlan", lease_list=ls)) == []  # renewal due within the slack
