"""The import decision: the runbook's v2 data against the inventory and v3 -> the writes (values
the agent's own decoder and subnet choice accept as the host's), or one refusal line naming the
key, host or field and the way forward."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.subnet.choice import choose_subnet
from agent.subnet.config import parse_config
from agent.subnet.layout import decode_lease
from overlayctl.etcd.v2 import parse_dump
from overlayctl.etcd.v2_import import LEASE_TTL, ImportRefused, decide, missing, v3_config
from overlayctl.inventory import parse_inventory
from overlayctl.inventory.model import Inventory
from tests.unit.overlayctl.test_etcd_v2 import PREFIX, dump

NODE1, NODE2, STRANGER = "192.168.255.154", "192.168.255.155", "192.168.255.99"
CONFIG = '{"Network":"172.21.0.0/16"}'
KEY31, KEY40 = f"{PREFIX}/subnets/172.21.31.0-24", f"{PREFIX}/subnets/172.21.40.0-24"


def inv(**cluster: object) -> Inventory:
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "tls": False, "os": "debian",
                    "etcd_prefix": PREFIX, "backend": "udp", **cluster},
        "hosts": [{"name": "node1", "address": NODE1}, {"name": "node2", "address": NODE2}],
    }  # fmt: skip
    return parse_inventory(doc, Path("/nonexistent"))[0]


def runbook(**subnets: tuple[str, int | None]):
    """The runbook's v2 state: node1's lease (TTL), node2's reservation, plus SUBNETS."""
    leases = {"172.21.31.0-24": (json.dumps({"PublicIP": NODE1}), 80000),
              "172.21.40.0-24": (json.dumps({"PublicIP": NODE2}), None)}  # fmt: skip
    leases |= {k.replace("_", "."): v for k, v in subnets.items()}
    return parse_dump(dump(CONFIG, leases), PREFIX)


def refusal(*args: object, **kw: object) -> str:
    with pytest.raises(ImportRefused) as err:
        decide(*args, **kw)  # type: ignore[arg-type]
    assert err.value.code == 4 and "\n" not in str(err.value)
    return str(err.value)


def test_the_runbooks_leases_become_what_agents_take_as_their_own() -> None:
    plan = decide(runbook(), inv(), [])
    conf, lease, reservation = plan.writes
    assert (conf.key, conf.ttl) == (f"{PREFIX}/config", 0)
    assert json.loads(conf.value) == {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}}
    assert (lease.key, lease.ttl, lease.public_ip) == (KEY31, LEASE_TTL, NODE1)
    assert LEASE_TTL == 86400
    assert (reservation.key, reservation.ttl) == (KEY40, 0)
    assert lease.value == '{"PublicIP":"192.168.255.154","BackendType":"udp"}'
    # The agent reads the config and the leases back, and node1's agent chooses its own lease.
    config = parse_config(conf.value)
    assert config.backend_type == "udp"
    decoded = decode_lease(lease.key, lease.value, lease_id=7)
    assert decoded.backend_type == "udp" and decoded.backend_data is None
    rsv = decode_lease(reservation.key, reservation.value)
    rng = random.Random(1)  # noqa: S311 - a subnet choice, not cryptography
    choice = choose_subnet(config, [decoded], [rsv], IPv4Address(NODE1), None, rng)
    assert (str(choice.subnet), choice.reason) == ("172.21.31.0/24", "own-lease")
    choice = choose_subnet(config, [decoded], [rsv], IPv4Address(NODE2), None, rng)
    assert (str(choice.subnet), choice.reason) == ("172.21.40.0/24", "own-reservation")
    assert plan.want == ((KEY31, NODE1), (KEY40, NODE2))
    doc = json.loads(json.dumps(plan.to_json()))
    assert [w["ttl"] for w in doc["writes"]] == [0, LEASE_TTL, 0]
    assert doc["subnets"][0] == {"key": KEY31, "public_ip": NODE1} and doc["lines"]
    assert any("node1 (192.168.255.154), v2 lease, 22 h 13 min left -> v3 lease" in x
               for x in plan.lines)  # fmt: skip


def test_a_rerun_writes_nothing_and_is_done() -> None:
    first = decide(runbook(), inv(), [])
    v3 = [(w.key, w.value, 5 if w.ttl else 0) for w in first.writes]
    again = decide(runbook(), inv(), v3)
    assert again.writes == () and again.changes == 0
    assert missing(again, v3, PREFIX) == []
    assert missing(first, v3[:2], PREFIX) == [f"{KEY40} (absent, want {NODE2})"]


def test_a_v3_key_of_another_public_ip_refuses() -> None:
    v3 = [(KEY31, json.dumps({"PublicIP": NODE2, "BackendType": "udp"}), 9)]
    why = refusal(runbook(), inv(), v3)
    assert f"etcd v3 key {KEY31} belongs to PublicIP {NODE2}" in why
    assert f"ETCDCTL_API=3 etcdctl del {KEY31}" in why


def test_a_host_with_a_v3_key_besides_its_v2_lease_refuses() -> None:
    other = f"{PREFIX}/subnets/172.21.77.0-24"  # what init gave node1 when subnet.env was gone
    why = refusal(runbook(), inv(), [(other, json.dumps({"PublicIP": NODE1}), 9)])
    assert f"PublicIP {NODE1} (node1) holds v3 key {other} besides its v2 lease {KEY31}" in why


def test_two_v2_leases_of_one_public_ip_refuse() -> None:
    why = refusal(runbook(**{"172_21_9_0-24": (json.dumps({"PublicIP": NODE1}), 50)}), inv(), [])
    assert f"PublicIP {NODE1} holds 2 v2 subnets" in why
    assert "ETCDCTL_API=2 etcdctl rm" in why


def test_a_stale_lease_refuses_unless_dropped() -> None:
    v2 = runbook(**{"172_21_9_0-24": (json.dumps({"PublicIP": STRANGER}), 50)})
    why = refusal(v2, inv(), [])
    assert f"v2 lease {PREFIX}/subnets/172.21.9.0-24" in why and STRANGER in why
    assert "--drop-stale" in why
    plan = decide(v2, inv(), [], drop_stale=True)
    assert [w.key for w in plan.writes][1:] == [KEY31, KEY40]
    assert any("stale" in line and STRANGER in line for line in plan.lines)


def test_a_lease_outside_the_subnet_range_is_stale() -> None:
    v2 = runbook(**{"172_21_0_0-24": (json.dumps({"PublicIP": NODE1}), 50)})  # below SubnetMin
    assert "lies outside 172.21.0.0/16" in refusal(v2, inv(), [])
    # Left out, it is no second lease of node1's either.
    assert [w.key for w in decide(v2, inv(), [], drop_stale=True).writes][1:] == [KEY31, KEY40]


@pytest.mark.parametrize(
    ("cluster", "needle"),
    [
        ({"network": "10.9.0.0/16"}, "says network 172.21.0.0/16, the inventory's cluster.network"),
        ({"subnet_len": 25}, "says subnet_len 24, the inventory's cluster.subnet_len is 25"),
        ({"subnet_max": "172.21.200.0"}, "cluster.subnet_max is 172.21.200.0"),
        ({"etcd_prefix": "/coreos.com/network"}, "cluster.etcd_prefix is /coreos.com/network"),
    ],
)
def test_network_and_prefix_differences_refuse_even_with_force(cluster: dict, needle: str) -> None:
    assert needle in refusal(runbook(), inv(**cluster), [], force=True)


def test_another_backend_refuses_without_force_and_adopts_in_udp_with_it() -> None:
    why = refusal(runbook(), inv(backend="vxlan"), [])
    assert "uses backend udp, the inventory vxlan" in why and "--force" in why
    plan = decide(runbook(), inv(backend="vxlan"), [], force=True)
    conf, lease, _ = plan.writes
    assert json.loads(conf.value)["Backend"] == {"Type": "udp"}
    assert json.loads(lease.value)["BackendType"] == "udp"
    # Backend options count too: udp on another port is another backend.
    why = refusal(runbook(), inv(backend_options={"port": 8300}), [])
    assert 'the inventory udp {"Port": 8300}' in why
    config = v3_config(inv(backend_options={"port": 8300}), runbook().config)  # type: ignore[arg-type]
    assert config["Backend"] == {"Type": "udp"}


def test_vxlan_leases_keep_their_mac() -> None:
    value = json.dumps({"PublicIP": NODE1, "BackendType": "vxlan",
                        "BackendData": {"VtepMAC": "aa:bb:cc:dd:ee:ff"}})  # fmt: skip
    v2 = parse_dump(dump('{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}',
                         {"172.21.31.0-24": (value, 100)}), PREFIX)  # fmt: skip
    _conf, lease = decide(v2, inv(backend="vxlan"), []).writes
    assert decode_lease(lease.key, lease.value).backend_data == {"VtepMAC": "aa:bb:cc:dd:ee:ff"}


def test_the_v3_config_is_kept_when_it_is_the_imports_or_the_inventorys() -> None:
    done = [(f"{PREFIX}/config", '{"Network":"172.21.0.0/16","Backend":{"Type":"udp"}}', 0)]
    assert [w.key for w in decide(runbook(), inv(), done).writes] == [KEY31, KEY40]
    switched = [(f"{PREFIX}/config", '{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}', 0)]
    plan = decide(runbook(), inv(backend="vxlan"), switched, force=True)
    assert [w.key for w in plan.writes] == [KEY31, KEY40]
    why = refusal(runbook(), inv(), switched)
    assert f"etcd v3 key {PREFIX}/config holds another network config" in why


def test_config_problems_refuse_with_the_key() -> None:
    no_config = parse_dump(dump(None, {"172.21.31.0-24": ('{"PublicIP":"1.1.1.1"}', 5)}), PREFIX)
    assert f"{PREFIX}/config is absent in the v2 API" in refusal(no_config, inv(), [])
    bad = parse_dump(dump('{"Network":"172.21.0.0/16","Backend":{}}', {}), PREFIX)
    assert f"{PREFIX}/config: Backend has no Type" in refusal(bad, inv(), [])


def test_nothing_in_v2_is_nothing_to_do_and_oddities_are_listed() -> None:
    empty = parse_dump('{"errorCode":100,"message":"Key not found"}', PREFIX)
    assert decide(empty, inv(), []).writes == ()
    dirs_left = parse_dump(dump(None, {}), PREFIX)  # a drop cut before its directories
    assert dirs_left.found and decide(dirs_left, inv(), []).writes == ()
    odd = parse_dump(dump(CONFIG, {"junk": ("x", None)}), PREFIX)
    plan = decide(odd, inv(), [])
    assert [w.key for w in plan.writes] == [f"{PREFIX}/config"]
    assert any(line.startswith("ignored: ") and "junk" in line for line in plan.lines)


def test_several_problems_name_the_first_and_count_the_rest() -> None:
    v2 = runbook(**{"172_21_9_0-24": (json.dumps({"PublicIP": STRANGER}), 50),
                    "172_21_10_0-24": (json.dumps({"PublicIP": "10.0.0.98"}), 50)})  # fmt: skip
    assert refusal(v2, inv(), []).endswith("(and 1 more problem)")


# -- property: whatever v2 and v3 hold, a refusal or writes the agent accepts ----------------------

ADDRESSES = [NODE1, NODE2, STRANGER, "10.1.1.1"]
SUBNETS = ["172.21.31.0-24", "172.21.40.0-24", "172.21.0.0-24", "172.21.7.0-24", "10.0.0.0-24"]
lease_values = st.builds(
    lambda ip, extra: json.dumps({"PublicIP": ip, **extra}),
    st.sampled_from(ADDRESSES),
    st.sampled_from(
        [{}, {"BackendType": "udp"}, {"BackendData": {"VtepMAC": "aa:bb:cc:dd:ee:ff"}}]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(SUBNETS),
        st.tuples(lease_values, st.none() | st.integers(1, 86400)),
        max_size=5,
    ),
    st.dictionaries(st.sampled_from(SUBNETS), lease_values, max_size=3),
    st.booleans(),
    st.booleans(),
)
def test_any_state_gives_a_refusal_or_writes_agents_accept(
    v2_leases, v3_leases, force, stale
) -> None:  # type: ignore[no-untyped-def]
    v2 = parse_dump(dump(CONFIG, v2_leases), PREFIX)
    v3 = [(f"{PREFIX}/subnets/{k}", v, 0) for k, v in v3_leases.items()]
    try:
        plan = decide(v2, inv(), v3, force=force, drop_stale=stale)
    except ImportRefused as exc:
        assert "\n" not in str(exc)
        return
    existing = {k for k, _, _ in v3}
    keys = [w.key for w in plan.writes]
    assert len(keys) == len(set(keys)) and not existing & set(keys)
    config = parse_config(plan.writes[0].value) if keys[:1] == [f"{PREFIX}/config"] else None
    for w in plan.writes:
        if w.key.endswith("/config"):
            continue
        lease = decode_lease(w.key, w.value)
        assert lease.backend_type == "udp" and str(lease.public_ip) == w.public_ip
        assert config is None or config.contains_subnet(lease.subnet)
        assert w.public_ip in (NODE1, NODE2) and w.ttl in (0, LEASE_TTL)
    owners = [ip for _, ip in plan.want]
    assert len(owners) == len(set(owners))  # one subnet per host
    assert missing(plan, v3 + [(w.key, w.value, 1) for w in plan.writes], PREFIX) == []
