"""firewall: drops of the backend's port and of forwarded overlay traffic, found by walking the
host's real `iptables-save -c` (from the lab fixtures) with one fault added; none on the healthy
hosts, whose rules include overlayctl's own chains (OVERLAYCTL-INPUT, OVERLAY-PEERS,
OVERLAYCTL-FORWARD) and docker's."""

from __future__ import annotations

import copy
import json

import pytest

from overlayctl.doctor.checks import firewall
from tests.unit.overlayctl.doctor.labfacts import add_rules, context, doc, edit


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_a_healthy_lab_cluster_has_no_firewall_finding(backend: str) -> None:
    assert firewall.run(context(backend)) == []


def test_a_drop_of_one_peers_vxlan_port_names_the_host_the_peer_and_the_delete() -> None:
    d = doc("vxlan", "node2")
    add_rules(d, "filter", "[12:1320] -A INPUT -s 192.168.255.154/32 -p udp -m udp --dport 8472 "
              "-j DROP", first=True)  # fmt: skip
    (f,) = firewall.run(context("vxlan", {"node2": d}))
    assert (f.host, f.peer, f.check, f.severity) == ("node2", "node1", "firewall", "error")
    assert "8472/udp from node1 (192.168.255.154)" in f.message
    assert "[12 packets, 1320 bytes]" in f.evidence
    assert f.fix == ("iptables -t filter -D INPUT -s 192.168.255.154/32 -p udp -m udp "
                     "--dport 8472 -j DROP")  # fmt: skip


def test_a_drop_of_another_address_or_port_is_no_finding() -> None:
    d = doc("vxlan", "node2")
    add_rules(d, "filter", "[0:0] -A INPUT -s 10.9.9.9/32 -p udp -m udp --dport 8472 -j DROP",
              "[0:0] -A INPUT -p udp -m udp --dport 8473 -j DROP", first=True)  # fmt: skip
    assert firewall.run(context("vxlan", {"node2": d})) == []


def test_an_input_policy_drop_after_overlay_peers_returns_is_an_error() -> None:
    d = doc("udp", "node1")
    edit(d, "*filter\n:INPUT ACCEPT [0:0]", "*filter\n:INPUT DROP [4:336]")
    (f,) = firewall.run(context("udp", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert "filter INPUT policy DROP" in f.evidence
    assert f.fix == "iptables -I INPUT -s 192.168.255.155 -p udp --dport 8285 -j ACCEPT"


def test_overlay_peers_without_the_peer_says_the_allow_list_refuses_it() -> None:
    d = doc("vxlan", "node1")
    edit(d, "[0:0] -A OVERLAY-PEERS -s 192.168.255.155/32 -j RETURN\n", "")
    (f,) = firewall.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert "OVERLAY-PEERS" in f.evidence and "allow-list" in f.fix


def test_a_drop_behind_a_conntrack_match_is_a_warning_that_says_so() -> None:
    d = doc("vxlan", "node1")
    add_rules(d, "filter", "[3:252] -A INPUT -p udp -m udp --dport 8472 -m conntrack "
              "--ctstate NEW -j DROP", first=True)  # fmt: skip
    (f,) = firewall.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "warning")
    assert "cannot judge --ctstate NEW" in f.evidence


def test_a_reject_of_the_network_in_docker_user_stops_forwarded_traffic() -> None:
    d = doc("host-gw", "node2")
    edit(d, "[0:0] -A DOCKER-USER -j RETURN", "[7:588] -A DOCKER-USER -d 172.21.0.0/16 -j REJECT "
         "--reject-with icmp-port-unreachable\n[0:0] -A DOCKER-USER -j RETURN")  # fmt: skip
    (f,) = firewall.run(context("host-gw", {"node2": d}))
    assert (f.host, f.peer, f.severity, f.hop) == ("node2", "node1", "error", "node2 FORWARD")
    assert "DOCKER-USER" in f.message and "[7 packets, 588 bytes]" in f.evidence
    assert f.fix.startswith("iptables -t filter -D DOCKER-USER -d 172.21.0.0/16 -j REJECT")


def test_a_mangle_drop_of_the_peers_subnet_is_found_before_filter() -> None:
    d = doc("vxlan", "node1")
    add_rules(d, "mangle", "[0:0] -A FORWARD -s 172.21.73.0/24 -j DROP", first=True)
    (f,) = firewall.run(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert f.fix == "iptables -t mangle -D FORWARD -s 172.21.73.0/24 -j DROP"


NFT_DROP = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "filter", "handle": 1}},
    {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "accept"}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                   "right": 8472}},
        {"counter": {"packets": 9, "bytes": 990}}, {"drop": None}]}},
]}  # fmt: skip


def test_an_nft_table_of_its_own_dropping_the_port_is_found_with_its_handle() -> None:
    d = doc("vxlan", "node2")
    d["nft"] = {"rc": 0, "out": json.dumps(NFT_DROP), "err": ""}
    (f,) = firewall.run(context("vxlan", {"node2": d}))
    assert (f.host, f.peer, f.severity) == ("node2", "node1", "error")
    assert f.fix == "nft delete rule inet filter input handle 4" and "9 packets" in f.evidence


def test_an_nft_table_accepting_the_port_is_no_finding() -> None:
    d = doc("vxlan", "node2")
    ruleset = copy.deepcopy(NFT_DROP)
    ruleset["nftables"][3]["rule"]["expr"][2] = {"accept": None}
    ruleset["nftables"][2]["chain"]["policy"] = "drop"
    ruleset["nftables"][3]["rule"]["expr"][0]["match"]["right"] = {"set": [8472, 22]}
    d["nft"] = {"rc": 0, "out": json.dumps(ruleset), "err": ""}
    assert firewall.run(context("vxlan", {"node2": d})) == []


# `firewall-cmd --list-all-zones` / `--list-all-policies` as firewalld 1.2 prints them.
ZONES = """docker (active)
  target: ACCEPT
  icmp-block-inversion: no
  interfaces: docker0
  sources: 
  services: 
  ports: 
  forward: yes
  rich rules: 
public (default, active)
  target: default
  icmp-block-inversion: no
  interfaces: eth0
  sources: 
  services: cockpit dhcpv6-client ssh
  ports: %s
  protocols: 
  forward: yes
  masquerade: no
  rich rules: 
"""  # noqa: W291
POLICIES = """overlayctl-host (active)
  priority: -10
  target: CONTINUE
  ingress-zones: ANY
  egress-zones: HOST
  services: 
  ports: 
  rich rules: 
	rule priority="-20" family="ipv4" source address="192.168.255.154" port port="8472" protocol="udp" accept
	rule priority="-10" family="ipv4" port port="8472" protocol="udp" drop
"""  # noqa: W291, E501


def firewalld(d: dict, zones: str, policies: str = "") -> None:
    ok = {"rc": 0, "err": ""}
    d["firewalld"] = {
        "state": {**ok, "out": "running\n"},
        "active": {**ok, "out": ""},
        "zones": {**ok, "out": zones},
        "policies": {**ok, "out": policies},
    }


def inbound(ctx) -> list:
    """The findings about the backend's port (INPUT): these zones have no forward policy, so
    forwarded overlay traffic is rejected too (test_firewalld_real.py judges that part)."""
    return [f for f in firewall.run(ctx) if f.hop and f.hop.endswith(" INPUT")]


def test_firewalld_without_the_port_in_the_underlays_zone_names_the_zone_command() -> None:
    d = doc("vxlan", "node2")
    firewalld(d, ZONES % "")
    (f,) = inbound(context("vxlan", {"node2": d}))
    assert (f.host, f.peer, f.severity) == ("node2", "node1", "error")
    assert "zone public" in f.message
    assert f.fix == ("firewall-cmd --permanent --zone=public --add-port=8472/udp"
                     " && firewall-cmd --reload")  # fmt: skip


def test_firewalld_with_the_port_open_or_overlayctls_policy_is_no_finding() -> None:
    d = doc("vxlan", "node2")
    firewalld(d, ZONES % "8472/udp")
    assert inbound(context("vxlan", {"node2": d})) == []
    firewalld(d, ZONES % "", POLICIES)
    assert inbound(context("vxlan", {"node2": d})) == []


def test_overlayctls_policy_drops_a_peer_it_does_not_list() -> None:
    d = doc("vxlan", "node1")
    firewalld(d, ZONES % "8472/udp", POLICIES)  # lists node1's own address, not node2's
    (f,) = inbound(context("vxlan", {"node1": d}))
    assert (f.host, f.peer, f.severity) == ("node1", "node2", "error")
    assert "policy overlayctl-host" in f.message
