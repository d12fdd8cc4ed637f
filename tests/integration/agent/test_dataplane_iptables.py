"""flannel's iptables chains in a light host: created once, rebuilt for a new subnet, removed."""

from __future__ import annotations

import json
import sys

import pytest

from tests.dataplane_driver import ROOT

pytestmark = pytest.mark.lab

_SNIPPET = """
import json, sys
from ipaddress import IPv4Network
from agent.net.iptables import FlannelRules
args = json.loads(sys.argv[1])
rules = FlannelRules(IPv4Network(args["network"]), IPv4Network(args["subnet"]), args["masq"])
print(json.dumps({"changed": rules.teardown() if args["teardown"] else rules.ensure()}))
"""


def _rules(host, subnet: str = "10.5.1.0/24", masq: bool = True, teardown: bool = False):
    args = {"network": "10.5.0.0/16", "subnet": subnet, "masq": masq, "teardown": teardown}
    out = host.run(
        ["env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _SNIPPET, json.dumps(args)]
    ).stdout
    return json.loads(out)["changed"]


def _listing(host) -> tuple[list[str], list[str]]:
    filt = host.run(["iptables", "-S"]).stdout.splitlines()
    nat = host.run(["iptables", "-t", "nat", "-S"]).stdout.splitlines()
    return filt, nat


def test_flannel_chains_are_created_once_rebuilt_for_a_new_subnet_and_removed(light_lab) -> None:
    host = light_lab.add_host("h1")
    assert _rules(host) is True
    filt, nat = _listing(host)
    assert _rules(host) is False  # idempotent: nothing to do the second time
    assert _listing(host) == (filt, nat)

    fwd = 'flanneld forward" -j'
    assert [x for x in filt if "FLANNEL-FWD" in x] == [
        "-N FLANNEL-FWD",
        f'-A FORWARD -m comment --comment "{fwd} FLANNEL-FWD',
        f'-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "{fwd} ACCEPT',
        f'-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "{fwd} ACCEPT',
    ]
    masq = [x for x in nat if "FLANNEL-POSTRTG" in x]
    assert masq[:2] == [
        "-N FLANNEL-POSTRTG",
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    ]
    tag = '-m comment --comment "flanneld masq" -j'
    assert masq[2:] == [
        f"-A FLANNEL-POSTRTG -s 10.5.1.0/24 -d 10.5.0.0/16 {tag} RETURN",
        f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.1.0/24 {tag} RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.1.0/24 {tag} RETURN",
        f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {tag} MASQUERADE",
        f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {tag} MASQUERADE",
    ]

    # A new lease (another subnet): the chain is rebuilt, the jump stays single.
    assert _rules(host, subnet="10.5.7.0/24") is True
    filt, nat = _listing(host)
    assert sum("10.5.1.0/24" in x for x in nat) == 0
    assert sum("10.5.7.0/24" in x for x in nat) == 3
    assert sum("-j FLANNEL-POSTRTG" in x for x in nat) == 1
    assert sum("-j FLANNEL-FWD" in x for x in filt) == 1

    _rules(host, teardown=True)
    filt, nat = _listing(host)
    assert not [x for x in filt + nat if "FLANNEL" in x or "flanneld" in x]
    _rules(host, teardown=True)  # tearing down twice is fine


def test_without_ip_masq_only_the_forward_chain_exists(light_lab) -> None:
    host = light_lab.add_host("h1")
    assert _rules(host, masq=False) is True
    filt, nat = _listing(host)
    assert sum("FLANNEL-FWD" in x for x in filt) == 4
    assert not [x for x in nat if "FLANNEL" in x]


_DROP = """
import json, sys
from ipaddress import IPv4Network
from agent.net.iptables import FlannelRules
args = json.loads(sys.argv[1])
rules = FlannelRules(IPv4Network(args["network"]), IPv4Network(args["subnet"]), False)
print(json.dumps({"changed": rules.drop_unwanted()}))
"""


def test_ip_masq_turned_off_removes_a_previous_runs_masquerade(light_lab) -> None:
    """ip_masq on -> off on a running cluster (issue #16): the old FLANNEL-POSTRTG must go."""
    host = light_lab.add_host("h1")
    assert _rules(host, masq=True) is True
    assert any("FLANNEL-POSTRTG" in line for line in _listing(host)[1])
    args = json.dumps({"network": "10.5.0.0/16", "subnet": "10.5.1.0/24"})
    run = ["env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _DROP, args]
    assert json.loads(host.run(run).stdout)["changed"] is True
    assert not any("FLANNEL-POSTRTG" in line for line in _listing(host)[1])
    assert any("FLANNEL-FWD" in line for line in _listing(host)[0])  # forwarding stays
    assert json.loads(host.run(run).stdout)["changed"] is False  # nothing left the second time
