"""doctor's facts: the script's JSON parsed into HostFacts (never an exception for a bad
answer), `iptables-save -c` into chains with counters, firewall-cmd's listing into zones, and
the script's one argument naming only what it needs (no secret)."""

from __future__ import annotations

import json

import pytest

from overlayctl.doctor.facts import parse_facts, parse_firewalld_zones, parse_iptables_save
from tests.unit.overlayctl.doctor.labfacts import context, doc, facts, leases


@pytest.mark.parametrize("text", ["", "Traceback (most recent call last):\n  boom", "[1, 2]",
                                  '{"version": 2}', '{"version": 1}', "{not json"])  # fmt: skip
def test_a_bad_answer_is_an_error_string_not_an_exception(text: str) -> None:
    f = parse_facts("node1", text)
    assert f.host == "node1" and f.error.startswith("could not read the host's facts")


def test_the_lab_facts_parse_whole() -> None:
    f = facts("vxlan", "node1")
    assert f.error == "" and f.subnet is not None and str(f.subnet) == "172.21.87.1/24"
    peers = f.iptables["filter"]["OVERLAY-PEERS"]
    assert [r.text for r in peers.rules] == ["-A OVERLAY-PEERS -s 192.168.255.155/32 -j RETURN",
                                             "-A OVERLAY-PEERS -j DROP"]  # fmt: skip
    jump = f.iptables["filter"]["INPUT"].rules[1]
    assert (jump.target, jump.packets, jump.bytes, jump.index) == ("OVERLAYCTL-INPUT", 4846,
                                                                    845683, 2)  # fmt: skip
    assert f.missing == ["nft", "firewall-cmd"] and f.nft is None and not f.firewalld_running
    assert "etcd-password" not in json.dumps(f.agent_options)
    assert f.client_cert_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_iptables_save_quotes_counters_and_policies() -> None:
    tables = parse_iptables_save(
        "*filter\n:FORWARD DROP [7:588]\n:DOCKER-USER - [0:0]\n"
        '[2:84] -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD\nCOMMIT\n'
    )
    fwd = tables["filter"]["FORWARD"]
    assert (fwd.policy, fwd.packets, fwd.bytes) == ("DROP", 7, 588)
    (rule,) = fwd.rules
    assert rule.args[3] == "flanneld forward" and rule.packets == 2
    assert rule.delete_command == ("iptables -t filter -D FORWARD -m comment --comment "
                                   "'flanneld forward' -j FLANNEL-FWD")  # fmt: skip


def test_firewalld_zones_with_rich_rules_on_continuation_lines() -> None:
    zones = parse_firewalld_zones(
        "public (default, active)\n  target: default\n  interfaces: eth0\n  ports: 8472/udp\n"
        '  rich rules: \n\trule family="ipv4" source address="10.0.0.1" drop\n'
        "trusted\n  target: ACCEPT\n"
    )
    assert zones["public"]["ports"] == "8472/udp" and "default" in zones["public"]["header"]
    assert zones["public"]["rich rules"] == 'rule family="ipv4" source address="10.0.0.1" drop'
    assert zones["trusted"]["target"] == "ACCEPT"


def test_the_scripts_argument_names_peers_and_paths() -> None:
    from overlayctl.doctor.facts import script_params

    ctx = context("vxlan")
    params = json.loads(script_params(ctx.inv.hosts[0], ctx.plane, leases("vxlan")))
    assert params["peers"] == [{"public_ip": "192.168.255.155", "subnet": "172.21.73.0/24"}]
    assert (params["address"], params["backend"], params["vni"], params["port"]) == (
        "192.168.255.154", "vxlan", 1, 8472)  # fmt: skip
    assert "/etc/default/overlay-agent" in params["agent_env"]
    assert doc("vxlan", "node1")["version"] == 1
