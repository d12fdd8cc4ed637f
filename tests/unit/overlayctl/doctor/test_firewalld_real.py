"""doctor's firewalld half on real firewalld output: fixtures/firewalld/ holds what
doctor_facts.py printed on both hosts of a healthy 2-host vxlan lab cluster whose Debian 12 hosts
run firewalld 1.3.3 (installed from its .debs, then `overlayctl init`:
tests/e2e/test_doctor_firewalld.py does the same), node1's `firewall-cmd --list-all-policies`
with two real faults in place, and node1's `nft list table inet firewalld`, the order
doctor/firewalld.py follows. Each fault's fix, applied to the text as firewall-cmd would, ends
the finding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from overlayctl.doctor.checks import firewall
from overlayctl.doctor.context import Context
from overlayctl.doctor.dataplane import data_plane
from overlayctl.doctor.facts import parse_facts
from overlayctl.doctor.firewalld import parse_rich_rules
from overlayctl.doctor.model import Finding
from overlayctl.etcd.cluster import LeaseInfo
from tests.unit.overlayctl.doctor.labfacts import NOW, inventory

HERE = Path(__file__).parent / "fixtures" / "firewalld"
NODE2_ACCEPT = ('rule priority="-20" family="ipv4" source address="192.168.255.155" '
                'port port="8472" protocol="udp" accept')  # fmt: skip
FORWARD_DROP = 'rule priority="-30" family="ipv4" source address="172.21.43.0/24" drop'


def doc(host: str) -> dict[str, Any]:
    return json.loads((HERE / f"{host}.json").read_text())


def text(d: dict[str, Any], key: str) -> str:
    return d["firewalld"][key]["out"]


def put(d: dict[str, Any], key: str, out: str) -> dict[str, Any]:
    d["firewalld"][key]["out"] = out
    return d


def context(docs: dict[str, dict[str, Any]] | None = None) -> Context:
    inv = inventory("vxlan")
    config = {"Network": "172.21.0.0/16", "Backend": {"Type": "vxlan"}}
    leases = [LeaseInfo(**x) for x in json.loads((HERE / "leases.json").read_text())]
    ctx = Context(inv=inv, plane=data_plane(config, inv), hosts=["node1", "node2"], pairs=[],
                  leases=leases, leases_known=True, network_config=config, now=NOW)  # fmt: skip
    for host in ctx.hosts:
        ctx.facts[host] = parse_facts(host, json.dumps((docs or {}).get(host) or doc(host)))
    return ctx


def findings(d1: dict[str, Any]) -> list[Finding]:
    return firewall.run(context({"node1": d1}))


def with_fix(d: dict[str, Any], fix: str) -> dict[str, Any]:
    """D after FIX's `--add-rich-rule`/`--remove-rich-rule` in its policy, as firewall-cmd
    lists the result (the rule on its own line under `rich rules:`)."""
    m = re.fullmatch(r"firewall-cmd --permanent --policy=(\S+) --(add|remove)-rich-rule='([^']+)'"
                     r" && firewall-cmd --reload", fix)  # fmt: skip
    assert m, fix
    policy, verb, rule = m.groups()
    out = text(d, "policies")
    head = ("\n" + out).index(f"\n{policy} (active)\n")  # the first has none before
    at = out.index("  rich rules: \n", head) + len("  rich rules: \n")
    if verb == "add":
        return put(d, "policies", out[:at] + f"\t{rule}\n" + out[at:])
    assert f"\t{rule}\n" in out[at:]
    return put(d, "policies", out[:at] + out[at:].replace(f"\t{rule}\n", "", 1))


def test_the_healthy_firewalld_cluster_has_no_firewall_finding() -> None:
    ctx = context()
    assert firewall.run(ctx) == []
    f = ctx.facts["node1"]
    assert f.firewalld_running and f.firewalld_default_zone == "public"
    # What firewall-cmd 1.3.3 prints: no zone header says "(default)", eth0 is in no zone.
    assert not any("default" in z["header"] for z in f.firewalld_zones.values())
    assert "eth0" not in f.firewalld_active and "docker0" in f.firewalld_active
    rules = parse_rich_rules(f.firewalld_policies["overlayctl-host"]["rich rules"])
    assert [(r.priority, r.action, r.port) for r in rules if r.port and r.port[0] == "udp"] == [
        (-20, "accept", ("udp", 8472, 8472)), (-20, "accept", ("udp", 8472, 8472)),
        (-10, "drop", ("udp", 8472, 8472)),
    ]  # fmt: skip


def test_the_order_doctor_follows_is_the_one_firewalld_installs() -> None:
    """nft's own listing: the policies before the zone's rules, the zone's target last, and a
    forwarded packet judged by its ingress zone's chain, where no zone rich rule goes."""
    nft = (HERE / "node1-nft-table-firewalld.txt").read_text()

    def chain(name: str) -> list[str]:
        body = nft[nft.index(f"\tchain {name} {{\n") :]
        return [x.strip() for x in body[: body.index("\n\t}")].splitlines()[1:]]

    assert chain("filter_IN_public")[0] == "jump filter_INPUT_POLICIES_pre"
    assert chain("filter_IN_public")[-1] == "reject with icmpx admin-prohibited"
    assert chain("filter_FWD_public")[0] == "jump filter_FORWARD_POLICIES_pre"
    assert chain("filter_FWD_public")[-1] == "reject with icmpx admin-prohibited"
    assert chain("filter_FWD_docker")[-1] == "accept"  # docker's zone: target ACCEPT
    assert chain("filter_FORWARD_ZONES") == ['iifname "docker0" goto filter_FWD_docker',
                                             "goto filter_FWD_public"]  # fmt: skip
    assert "jump filter_FWD_policy_overlayctl-forward" in chain("filter_FORWARD_POLICIES_pre")


def test_a_peers_accept_gone_from_overlayctls_policy_is_an_error_with_a_working_fix() -> None:
    d = put(doc("node1"), "policies", (HERE / "node1-policies-peer-accept-removed.txt").read_text())
    (f,) = findings(d)
    assert (f.host, f.peer, f.check, f.severity, f.hop) == (
        "node1",
        "node2",
        "firewall",
        "error",
        "node1 INPUT",
    )
    assert f.message == ("firewalld policy overlayctl-host drops vxlan's 8472/udp from node2 "
                         "(192.168.255.155)")  # fmt: skip
    assert 'rule priority="-10" family="ipv4" port port="8472" protocol="udp" drop' in f.evidence
    assert "eth0 in zone public (default zone public)" in f.evidence
    assert f.fix == ("firewall-cmd --permanent --policy=overlayctl-host --add-rich-rule='"
                     + NODE2_ACCEPT + "' && firewall-cmd --reload")  # fmt: skip
    assert findings(with_fix(d, f.fix)) == []


def test_a_rich_rule_dropping_a_peers_forwarded_traffic_is_an_error_with_a_working_fix() -> None:
    d = put(doc("node1"), "policies", (HERE / "node1-policies-forward-drop.txt").read_text())
    (f,) = findings(d)
    assert (f.host, f.peer, f.check, f.severity, f.hop) == (
        "node1",
        "node2",
        "firewall",
        "error",
        "node1 FORWARD",
    )
    assert "policy overlayctl-forward drops forwarded overlay traffic 172.21.43.0/24" in f.message
    assert FORWARD_DROP in f.evidence
    assert f.fix == ("firewall-cmd --permanent --policy=overlayctl-forward --remove-rich-rule='"
                     + FORWARD_DROP + "' && firewall-cmd --reload")  # fmt: skip
    assert findings(with_fix(d, f.fix)) == []


def test_a_policy_of_someone_elses_with_target_drop_stops_forwarded_traffic() -> None:
    mine = ("block-all (active)\n  priority: -20\n  target: DROP\n  ingress-zones: ANY\n"
            "  egress-zones: ANY\n  services: \n  ports: \n  rich rules: \n")  # fmt: skip
    d = put(doc("node1"), "policies", mine + text(doc("node1"), "policies"))
    (f,) = findings(d)
    assert f.hop == "node1 FORWARD" and "policy block-all drops" in f.message
    assert "target DROP" in f.evidence
    assert f.fix.startswith(
        "firewall-cmd --permanent --policy=block-all --add-rich-rule="
        '\'rule priority="-32768" family="ipv4" source address='
        '"172.21.0.0/16" destination address="172.21.0.0/16" accept'
    )
    assert findings(with_fix(d, f.fix)) == []


def test_a_zone_rule_cannot_drop_what_overlayctls_policies_accept_first() -> None:
    zones = text(doc("node1"), "zones")
    at = zones.index("  rich rules: \n", zones.index("\npublic\n")) + len("  rich rules: \n")
    zones = zones[:at] + '\trule family="ipv4" port port="8472" protocol="udp" drop\n' + zones[at:]
    zones = zones.replace("\npublic\n  target: default", "\npublic\n  target: DROP", 1)
    assert findings(put(doc("node1"), "zones", zones)) == []


def test_without_overlayctls_policies_the_default_zone_decides() -> None:
    """firewalld started after init: the default zone rejects the port and forwarding."""
    d = put(doc("node1"), "policies", text(doc("node1"), "policies").split("\noverlayctl-")[0])
    inbound, forwarded = findings(d)
    assert inbound.hop == "node1 INPUT" and "zone public rejects" in inbound.message
    assert inbound.fix == ("firewall-cmd --permanent --zone=public --add-port=8472/udp"
                           " && firewall-cmd --reload")  # fmt: skip
    assert forwarded.hop == "node1 FORWARD" and "zone public rejects" in forwarded.message
    assert forwarded.fix.startswith("overlayctl init")
    # The default zone is what --get-default-zone says: none of the zones' headers marks it.
    home = text(d, "zones").replace("home\n  target: default\n  icmp-block-inversion: no\n  "
                                    "interfaces: \n  sources: \n  services: dhcpv6-client mdns "
                                    "samba-client ssh\n  ports: ",
                                    "home\n  target: ACCEPT\n  icmp-block-inversion: no\n  "
                                    "interfaces: \n  sources: \n  services: dhcpv6-client mdns "
                                    "samba-client ssh\n  ports: 8472/udp")  # fmt: skip
    assert findings(put(put(d, "zones", home), "default", "home\n")) == []


def test_rules_on_what_a_packet_cannot_tell_are_not_judged() -> None:
    rules = parse_rich_rules(
        'rule family="ipv4" source address="192.168.255.155" service name="vxlan" drop\n'
        'rule family="ipv4" source NOT address="192.168.255.155" drop\n'
        'rule family="ipv6" source address="fd00::1" drop\n'
        'rule family="ipv4" source address="192.168.255.155" log prefix="drop" level="info"\n'
    )
    assert [(r.judged, r.ipv6, r.action) for r in rules] == [
        (False, False, "drop"), (False, False, "drop"), (True, True, "drop"),
        (True, False, None),
    ]  # fmt: skip
