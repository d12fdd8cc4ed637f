"""Reading flanneld's v2 data: answers captured from etcd 3.4.23 here (`--enable-v2`, the
runbook's `etcdctl mk` and `set --ttl 86400`), flanneld 0.7's defaults, and hostile dumps (one
error type for what is no dump, a report line for anything odd inside one)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayctl.errors import OverlayctlError
from overlayctl.etcd.v2 import V2DumpError, flannel07_config, parse_dump

PREFIX = "/atomic.io/network"
# etcd 3.4.23, after the runbook's commands plus a reservation (a `set` without --ttl).
RUNBOOK = (
    '{"action":"get","node":{"key":"/atomic.io/network","dir":true,"nodes":[{"key":"/atomic.io/'
    'network/config","value":"{\\"Network\\":\\"172.21.0.0/16\\"}","modifiedIndex":4,'
    '"createdIndex":4},{"key":"/atomic.io/network/subnets","dir":true,"nodes":[{"key":"/atomic.io'
    '/network/subnets/172.21.31.0-24","value":"{\\"PublicIP\\":\\"192.168.255.154\\"}",'
    '"expiration":"2026-12-04T07:35:19.555146773Z","ttl":86400,"modifiedIndex":5,"createdIndex"'
    ':5},{"key":"/atomic.io/network/subnets/172.21.40.0-24","value":"{\\"PublicIP\\":\\"192.168.'
    '255.155\\"}","modifiedIndex":6,"createdIndex":6}],"modifiedIndex":5,"createdIndex":5}],'
    '"modifiedIndex":4,"createdIndex":4}}'
)
NOT_FOUND = '{"errorCode":100,"message":"Key not found","cause":"/nope","index":6}'


def dump(config: str | None = None, subnets: dict[str, tuple[str, int | None]] | None = None,
         extra: list[dict] | None = None) -> str:  # fmt: skip
    """A v2 answer for PREFIX with CONFIG and SUBNETS (name -> (value, ttl))."""
    nodes: list[dict] = []
    if config is not None:
        nodes.append({"key": f"{PREFIX}/config", "value": config, "modifiedIndex": 4})
    if subnets is not None:
        leases = []
        for name, (value, ttl) in subnets.items():
            node = {"key": f"{PREFIX}/subnets/{name}", "value": value, "modifiedIndex": 7}
            if ttl is not None:
                node |= {"ttl": ttl, "expiration": "2026-12-04T07:00:00Z"}
            leases.append(node)
        nodes.append({"key": f"{PREFIX}/subnets", "dir": True, "nodes": leases})
    nodes += extra or []
    return json.dumps({"action": "get", "node": {"key": PREFIX, "dir": True, "nodes": nodes}})


def test_the_runbooks_cluster_reads_as_flanneld_07_read_it() -> None:
    net = parse_dump(RUNBOOK, "/atomic.io/network/")
    assert net.found and net.unexpected == () and net.config_error == ""
    assert net.config_raw == '{"Network":"172.21.0.0/16"}'
    cfg = net.config
    assert cfg is not None
    assert cfg.backend_type == "udp"  # no Backend: flanneld 0.7's default, not our agent's vxlan
    assert (cfg.network, cfg.subnet_len) == (IPv4Network("172.21.0.0/16"), 24)
    assert (cfg.subnet_min, cfg.subnet_max) == (
        IPv4Address("172.21.1.0"),
        IPv4Address("172.21.255.0"),
    )
    lease, reservation = net.leases
    assert lease.subnet == IPv4Network("172.21.31.0/24")
    assert lease.public_ip == IPv4Address("192.168.255.154")
    assert (lease.ttl, lease.backend_type, lease.backend_data) == (86400, "", None)
    assert lease.expiration == "2026-12-04T07:35:19.555146773Z" and lease.modified_index == 5
    assert not lease.is_reservation
    assert reservation.is_reservation and reservation.public_ip == IPv4Address("192.168.255.155")
    assert {n.key for n in net.nodes if n.dir} == {PREFIX, f"{PREFIX}/subnets"}
    assert len(net.nodes) == 5


def test_no_such_prefix_is_an_empty_network() -> None:
    net = parse_dump(NOT_FOUND, PREFIX)
    assert not net.found and net.config is None and net.leases == ()


def test_a_dump_of_a_directory_above_the_prefix_reads_the_same() -> None:
    top = json.loads(RUNBOOK)["node"]
    root = {"action": "get", "node": {"dir": True, "nodes": [  # /v2/keys/: the root has no key
        {"key": "/other", "value": "x"},
        {"key": "/atomic.io", "dir": True, "nodes": [{"key": "/atomic.io/x", "value": "y"}, top]},
    ]}}  # fmt: skip
    whole = parse_dump(json.dumps(root), PREFIX)
    assert whole == parse_dump(RUNBOOK, PREFIX)
    assert not parse_dump(json.dumps(root), "/coreos.com/network").found
    assert not parse_dump(json.dumps(root), "/atomic.io/network/subnets/x/y").found


def test_vxlan_leases_keep_their_backend_data() -> None:
    mac = {"VtepMAC": "aa:bb:cc:dd:ee:ff"}
    value = json.dumps({"PublicIP": "10.0.0.2", "BackendType": "vxlan", "BackendData": mac})
    net = parse_dump(dump('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}',
                          {"10.5.3.0-24": (value, 3600)}), PREFIX)  # fmt: skip
    assert net.config is not None and net.config.backend_type == "vxlan"
    (lease,) = net.leases
    assert lease.backend_type == "vxlan"
    assert dict(lease.backend_data or {}) == {"VtepMAC": "aa:bb:cc:dd:ee:ff"}


@pytest.mark.parametrize(
    ("config", "subnet_len", "lo", "hi"),
    [
        ('{"Network":"10.0.0.0/8"}', 24, "10.0.1.0", "10.255.255.0"),
        ('{"Network":"192.168.64.0/22"}', 24, "192.168.65.0", "192.168.67.0"),
        ('{"Network":"192.168.64.0/22","SubnetLen":0}', 24, "192.168.65.0", "192.168.67.0"),
        ('{"network":"10.1.0.0/16","subnetlen":26,"SubnetMax":"10.1.9.0"}', 26, "10.1.0.64",
         "10.1.9.0"),
    ],
)  # fmt: skip
def test_subnet_defaults_are_flannels(config: str, subnet_len: int, lo: str, hi: str) -> None:
    cfg = flannel07_config(config)
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (subnet_len, lo, hi)
    assert cfg.backend_type == "udp"


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ('{"Network":"172.21.0.0/16","Backend":{"Port":8285}}', "Backend has no Type"),
        ('{"Network":"172.21.0.0/16","Backend":{"Type":"gre"}}', "unknown backend type"),
        ('{"Network":"nonsense"}', "Network"),
        # flanneld 0.7 halves a /23 (one subnet between SubnetMin and SubnetMax); the agent
        # cannot run that, where a later flannel's /25 default would hide it.
        ('{"Network":"192.168.64.0/23"}', "at least four subnets"),
        ("not json", "not valid JSON"),
    ],
)
def test_an_unusable_config_is_reported_with_its_key(config: str, why: str) -> None:
    net = parse_dump(dump(config, {}), PREFIX)
    assert net.config is None and net.config_raw == config
    assert net.config_error.startswith(f"{PREFIX}/config: ") and why in net.config_error


def test_anything_else_under_the_prefix_is_reported_not_a_crash() -> None:
    net = parse_dump(
        dump(
            '{"Network":"172.21.0.0/16"}',
            {
                "172.21.5.0-24": ('{"PublicIP":"10.0.0.1"}', 100),
                "172.21.6.7-24": ('{"PublicIP":"10.0.0.2"}', 100),  # not a network address
                "garbage": ('{"PublicIP":"10.0.0.3"}', 100),
                "172.21.8.0-24": ("[1,2]", 100),
                "172.21.9.0-24": ('{"PublicIP":"no"}', None),
            },
            [
                {"key": f"{PREFIX}/other", "value": "x"},
                {"key": f"{PREFIX}/empty", "dir": True},
                {"key": "/elsewhere/k", "value": "x"},
                {
                    "key": f"{PREFIX}/subnets2",
                    "dir": True,
                    "nodes": [{"key": f"{PREFIX}/subnets2/a"}],
                },
                "not a node",
            ],
        ),
        PREFIX,
    )
    assert [str(x.subnet) for x in net.leases] == ["172.21.5.0/24"]
    text = "\n".join(net.unexpected)
    for needle in ("172.21.6.7-24: not a flannel lease", "subnets/garbage: not a flannel lease",
                   "172.21.8.0-24: not a flannel lease", "172.21.9.0-24: not a flannel lease",
                   f"{PREFIX}/other: not flanneld's", f"{PREFIX}/empty/: an empty directory",
                   "/elsewhere/k: outside", f"{PREFIX}/subnets2/a: a key without a text value",
                   "no etcd v2 node"):  # fmt: skip
        assert needle in text
    assert len(net.unexpected) == 9


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not JSON"),
        ("404 page not found", "not JSON"),
        ("[]", "not a JSON object"),
        (
            '{"errorCode":110,"message":"The request requires user authentication"}',
            "etcd error 110",
        ),
        ('{"action":"get","node":{"key":"/other","dir":true}}', "no node for /atomic.io/network"),
        ('{"action":"get","node":{"key":"/atomic.io/net","dir":true}}', "no node for"),
        ('{"action":"get","node":{"key":7}}', "no node for"),
        ('{"action":"get"}', "no node"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_what_is_no_dump_is_one_error(text: str, why: str) -> None:
    with pytest.raises(V2DumpError, match=why) as err:
        parse_dump(text, PREFIX)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_a_deep_tree_is_walked_without_recursion() -> None:
    depth = 400  # about as deep as json.loads goes (two levels each: a dict and its node list)
    opening = f'{{"key":"{PREFIX}/d","dir":true,"nodes":['
    text = (f'{{"node":{{"key":"{PREFIX}","dir":true,"nodes":[' + opening * depth
            + f'{{"key":"{PREFIX}/d","value":"x"}}' + "]}" * depth + "]}}")  # fmt: skip
    net = parse_dump(text, PREFIX)
    assert f"{PREFIX}/d: not flanneld's (config or subnets/)" in net.unexpected
    assert len(net.nodes) == depth + 2
    with pytest.raises(V2DumpError, match="not JSON"):  # deeper: json's own limit, same error
        parse_dump(text.replace(opening, opening * 3), PREFIX)


# -- fuzz: never anything but V2DumpError ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
SAMPLE_KEYS = [PREFIX, f"{PREFIX}/config", f"{PREFIX}/subnets", f"{PREFIX}/subnets/172.21.3.0-24",
               f"{PREFIX}/subnets/1.2.3.4-33", "/x", ""]  # fmt: skip
SAMPLE_VALUES = ['{"Network":"172.21.0.0/16"}', '{"PublicIP":"10.0.0.1"}', "{}", "null",
                 '{"PublicIP":"10.0.0.1","BackendData":[]}', '{"Network":"1.0.0.0/30"}',
                 '{"Network":"10.0.0.0/8","SubnetLen":true}']  # fmt: skip
keys = st.sampled_from(SAMPLE_KEYS) | st.text(max_size=40)
values = st.sampled_from(SAMPLE_VALUES) | json_values.map(json.dumps)
leaf_extras = {"ttl": json_values, "modifiedIndex": json_values, "expiration": json_values}
nodes = (
    st.recursive(
        st.fixed_dictionaries({"key": keys, "value": values}, optional=leaf_extras),
        lambda inner: st.fixed_dictionaries(
            {"key": keys, "dir": st.just(True)},
            optional={"nodes": st.lists(inner, max_size=5) | json_values},
        ),
        max_leaves=20,
    )
    | json_values
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {}, optional={"node": nodes, "errorCode": json_values, "action": json_values}
    )
)
def test_fuzz_structured_dumps(doc: dict) -> None:
    try:
        net = parse_dump(json.dumps(doc), PREFIX)
    except V2DumpError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(line, str) for line in net.unexpected)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200) | json_values.map(json.dumps))
def test_fuzz_any_text(text: str | bytes) -> None:
    try:
        parse_dump(text, PREFIX)
    except V2DumpError as exc:
        assert isinstance(exc, OverlayctlError) and "\n" not in str(exc)
