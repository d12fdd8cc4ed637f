"""A cluster built by hand, read from facts (overlayctl/plan/handbuilt.py), and init's refusal
(docs/design/adopt.md 2.5).

The fixtures are real outputs, captured on lab hosts (fixtures/handbuilt/README.md): the
runbook's state by hand (flanneld.service with RequiredBy=docker.service, docker's and etcd's
override.conf, a persistent flannel0 with the /16 route, two containers, plain-http etcd with
the v2 config and leases), a host overlayctl's `init` made (TLS), and a fresh lab host.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.plan.facts import RemoteFile, UnitState, parse_facts
from overlayctl.plan.handbuilt import (
    EtcdFound,
    HandBuilt,
    HostHandBuilt,
    Member,
    V2Found,
    parse_etcd,
    parse_host,
)

FIXTURES = Path(__file__).parent / "fixtures" / "handbuilt"
NODE1, NODE2 = "192.168.255.154", "192.168.255.155"
OURS = b"# Managed by overlayctl for cluster lab; local changes are replaced by the next 'overlayctl init'.\n"  # noqa: E501
HAND_CONF = b'#[Member]\nETCD_DATA_DIR="/var/lib/etcd/node1.etcd"\nETCD_NAME="node1"\n'
OUR_CONF = OURS + b'#[Member]\nETCD_DATA_DIR="/var/lib/etcd/node1.etcd"\n'


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def host(name: str, files: dict[str, bytes] | None = None) -> HostHandBuilt:
    found = text(name)
    read = {p: RemoteFile(p, c) for p, c in (files or {}).items()}
    return parse_host(found, parse_facts(found), read)


def test_the_runbooks_host_by_hand() -> None:
    node2 = host("facts-hand-node2.txt", {
        hp.ETCD_CONF: HAND_CONF.replace(b"node1", b"node2"),
        "/etc/docker/daemon.json": b'{"mtu": 1472, "log-driver": "json-file"}\n',
        hp.SUBNET_ENV: b"FLANNEL_NETWORK=172.21.0.0/16\nFLANNEL_SUBNET=172.21.64.1/24\n",
        hp.DOCKER_OPTS_ENV: b'DOCKER_OPT_BIP="--bip=172.21.64.1/24"\n',
        "/etc/sysconfig/flanneld": b'FLANNEL_ETCD_PREFIX="/atomic.io/network"\n',
    })  # fmt: skip
    assert node2.flanneld.running and node2.flanneld.enabled
    assert node2.flanneld.fragment == "/etc/systemd/system/flanneld.service"
    assert node2.flanneld.required_by == ("docker.service",)
    assert node2.docker.bound_to_flanneld  # stopping flanneld would stop docker
    (argv,) = node2.docker.exec_start
    assert argv[0] == "/usr/sbin/dockerd" and "--bip=172.21.64.1/24" in argv
    assert node2.docker.running_args[-3:] == ("--bip=172.21.64.1/24", "--ip-masq=true",
                                              "--mtu=1472")  # fmt: skip
    assert node2.docker.environment_files == ("-/etc/default/docker", "-/run/flannel/docker")
    paths = {d.path: d for d in node2.drop_ins}
    assert set(paths) == {
        "/etc/systemd/system/etcd.service.d/override.conf",
        "/usr/lib/systemd/system/docker.service.d/flannel.conf",  # the RPM's
        "/etc/systemd/system/docker.service.d/override.conf",  # systemctl edit's
    }
    assert [d.settings for d in node2.drop_ins] == [
        ("EnvironmentFile",), ("EnvironmentFile",), ("ExecStart",),
    ]  # fmt: skip
    assert [d.unit for d in node2.late_drop_ins] == ["etcd", "docker"]  # not flannel.conf
    assert node2.daemon_json_keys == ("mtu",)
    (tun,) = node2.devices
    assert (tun.name, tun.kind, tun.persistent) == ("flannel0", "tun", False)  # flanneld's own
    assert "172.21.0.0/16 dev flannel0 proto kernel scope link src 172.21.64.0" in node2.routes
    assert node2.subnet_env and node2.subnet_env["FLANNEL_SUBNET"] == "172.21.64.1/24"
    assert node2.docker_opts == {"DOCKER_OPT_BIP": "--bip=172.21.64.1/24"}
    assert node2.flanneld_env == ("/etc/sysconfig/flanneld",)
    assert {(c.name, c.restart, c.ip) for c in node2.containers} == {
        ("app", "always", "172.21.64.2"), ("solo", "no", "172.21.64.3"),
    }  # fmt: skip
    assert all(len(c.id) == 64 and c.started_at.endswith("Z") and c.pid for c in node2.containers)
    assert node2.signs() == ["flanneld.service active", "etcd.conf not written by overlayctl"]


def test_the_rpms_flanneld_and_an_edited_vendor_unit() -> None:
    node1 = host("facts-hand-node1.txt")
    assert node1.flanneld.fragment == "/lib/systemd/system/flanneld.service"
    assert node1.flanneld.wanted_by == ("docker.service", "multi-user.target")
    assert not node1.docker.bound_to_flanneld  # WantedBy: stopping flanneld leaves docker
    assert "--bip=172.21.24.1/24" in node1.docker.exec_start[0]  # the vendor unit's edit
    assert node1.late_drop_ins == node1.drop_ins[:1]  # etcd's override.conf only


def test_a_persistent_tun_is_told_from_flanneld_s_own() -> None:
    (tun,) = host("facts-persistent-tun.txt").devices
    assert (tun.name, tun.kind, tun.persistent) == ("flannel0", "tun", True)


def test_a_fresh_host_shows_nothing() -> None:
    fresh = host("facts-fresh-node1.txt")
    assert fresh == HostHandBuilt(
        docker=dataclasses.replace(fresh.docker),  # the vendor unit as it is
        flanneld=fresh.flanneld,
    )
    assert fresh.flanneld.fragment == "" and not fresh.flanneld.running
    assert fresh.docker.exec_start[0][-1] == "$DOCKER_OPTS"
    assert fresh.signs() == []


def test_a_host_overlayctl_made() -> None:
    ours = host("facts-ours-node1.txt", {hp.ETCD_CONF: OUR_CONF})
    assert ours.signs() == [] and ours.drop_ins == () and ours.containers == ()
    assert not ours.etcd_conf_foreign and not ours.docker.bound_to_flanneld
    assert [(d.name, d.kind) for d in ours.devices] == [("flannel.1", "vxlan")]
    assert "/run/flannel/docker" in ours.docker.environment_files  # ours: must exist


@pytest.mark.parametrize(
    ("state", "signs"),
    [
        (UnitState("inactive", "masked"), []),  # adopted: flanneld masked
        (UnitState("inactive", "disabled"), []),
        (UnitState("failed", "enabled"), ["flanneld.service enabled"]),
        (UnitState("activating", "disabled"), ["flanneld.service active"]),
    ],
)
def test_flanneld_counts_when_running_or_enabled(state: UnitState, signs: list[str]) -> None:
    found = host("facts-hand-node1.txt")
    flanneld = dataclasses.replace(found.flanneld, state=state)
    assert dataclasses.replace(found, flanneld=flanneld).signs() == signs


@pytest.mark.parametrize(
    ("conf", "facts_edit", "foreign"),
    [
        (OUR_CONF, None, False),  # ours, whichever cluster name the header says
        (OUR_CONF.replace(b"cluster lab", b"cluster older"), None, False),
        (HAND_CONF, None, True),
        # without data (nothing bootstrapped from it yet): nothing to lose
        (HAND_CONF, ("etcd_data=/var/lib/etcd/node1.etcd", ""), False),
        # Debian's package etcd has data of its own, the file names another dir
        (HAND_CONF, ("etcd_data=/var/lib/etcd/node1.etcd", "etcd_data=/var/lib/etcd/default"),
         False),
        # a data dir outside /var/lib/etcd: etcd running from it is the data
        (HAND_CONF.replace(b"/var/lib/etcd/node1.etcd", b"/srv/etcd"), None, True),
    ],
)  # fmt: skip
def test_etcd_conf_counts_only_when_not_ours_and_holding_data(conf, facts_edit, foreign) -> None:
    found = text("facts-hand-node1.txt")
    if facts_edit:
        found = found.replace(*facts_edit)
    record = parse_host(found, parse_facts(found), {hp.ETCD_CONF: RemoteFile(hp.ETCD_CONF, conf)})
    assert ("etcd.conf not written by overlayctl" in record.signs()) is foreign


def test_etcd_as_it_runs_by_hand() -> None:
    etcd = parse_etcd(text("found-hand-node1.txt"))
    assert etcd.client_url == "http://127.0.0.1:2379"
    assert etcd.members is not None
    assert [(m.name, m.peer_urls) for m in etcd.members] == [
        ("node1", (f"http://{NODE1}:2380",)), ("node2", (f"http://{NODE2}:2380",)),
    ]  # fmt: skip
    assert etcd.members[0].id == f"{6620456758856668532:x}"
    assert etcd.members[0].client_urls[1] == f"http://{NODE2}:4001"  # the runbook's slip
    assert etcd.v2_exit == 0 and "/atomic.io/network/subnets/" in etcd.v2_text


@pytest.mark.parametrize("raw", [
    "", "no etcd here", "members_exit=0\nmembers={}",  # no client_url: nothing ran
    "client_url=https://127.0.0.1:2379\nmembers_exit=1\nmembers=Error: context deadline",
    "client_url=http://127.0.0.1:2379\nmembers_exit=0\nmembers=not json",
    'client_url=http://127.0.0.1:2379\nmembers_exit=0\nmembers={"members": [{}]}',
])  # fmt: skip
def test_etcd_answers_that_say_nothing_never_raise(raw: str) -> None:
    etcd = parse_etcd(raw)
    assert etcd.members is None and etcd.v2_exit is None
    assert bool(etcd.members_error) == raw.startswith("client_url=")


def cluster(v2: V2Found | None = None, members: tuple[Member, ...] = (),
            listen: tuple[str, ...] = (f"http://{NODE1}:2380",),
            **hosts: HostHandBuilt) -> HandBuilt:  # fmt: skip
    """The record with node1 read through, its etcd listening for peers on LISTEN."""
    etcd = EtcdFound("http://127.0.0.1:2379", members, peer_listen=listen)
    return HandBuilt(hosts, etcd, v2 or V2Found(), "node1", NODE1)


def member(*urls: str) -> tuple[Member, ...]:
    return (Member("1", "node1", urls, ()), Member("2", "node2", (f"http://{NODE2}:2380",), ()))


def test_init_refuses_in_one_line_naming_adopt() -> None:
    hand1 = host("facts-hand-node1.txt", {hp.ETCD_CONF: HAND_CONF})
    hand2 = host("facts-hand-node2.txt")
    members = parse_etcd(text("found-hand-node1.txt")).members or ()
    v2 = V2Found(4, "/atomic.io/network/config", '{"Network":"172.21.0.0/16"}')
    found = cluster(v2, members, node1=hand1, node2=hand2)
    assert found.refusal() == (
        "node1: this cluster was built by hand (flanneld.service active; etcd.conf not written by "
        "overlayctl; /atomic.io/network/config in the v2 API; the same on node2): run "
        "'overlayctl adopt' (docs/runbooks/adopt.md), which keeps every subnet and container "
        "address"
    )
    assert "\n" not in (found.refusal() or "")


def test_each_sign_alone_refuses() -> None:
    ours = host("facts-ours-node1.txt", {hp.ETCD_CONF: OUR_CONF})
    assert cluster(node1=ours).refusal() is None
    alone = {
        "flanneld.service active": cluster(node1=host("facts-hand-node1.txt")),
        "/atomic.io/network/config in the v2 API": cluster(
            V2Found(1, "/atomic.io/network/config", "{}"), node1=ours),
        "2 keys under the prefix in the v2 API": cluster(V2Found(2), node1=ours),
        # issue 21's state: etcd.conf rewritten to https, the membership still http
        f"etcd's member list has http://{NODE1}:2380 for node1, which its etcd does not listen "
        "on": cluster(members=member(f"http://{NODE1}:2380"),
                      listen=(f"https://{NODE1}:2380",), node1=ours),
    }  # fmt: skip
    for sign, found in alone.items():
        assert found.found
        assert f"node1: this cluster was built by hand ({sign}" in (found.refusal() or ""), sign


@pytest.mark.parametrize(
    ("urls", "listen"),
    [
        ((f"https://{NODE1}:2380",), (f"https://{NODE1}:2380",)),  # overlayctl's, tls
        ((f"http://{NODE1}:2380",), ("http://0.0.0.0:2380",)),  # the runbook's: other signs
        # adopt's R1 (both schemes, the temporary port), then U1 (membership on it)
        ((f"http://{NODE1}:2380",), (f"http://{NODE1}:2380", f"https://{NODE1}:2382")),
        ((f"https://{NODE1}:2382",), (f"http://{NODE1}:2380", f"https://{NODE1}:2382")),
        (("http://localhost:2380",), ("http://localhost:2380",)),  # Debian's package etcd
        ((f"http://{NODE1}:2380",), ()),  # what it listens on was not read
    ],
)  # fmt: skip
def test_a_membership_its_etcd_serves_is_no_sign(urls, listen) -> None:
    """A scheme unlike the inventory's alone is a cluster.tls change on a cluster overlayctl
    made, which init refuses itself, naming change-network.md (tests/e2e/test_day2.py)."""
    ours = host("facts-ours-node1.txt", {hp.ETCD_CONF: OUR_CONF})
    assert cluster(members=member(*urls), listen=listen, node1=ours).refusal() is None


def test_fixture_drop_ins_are_what_the_files_say() -> None:
    """The dropin= lines carry each file whole (base64), so a plan can show it."""
    lines = [x for x in text("facts-hand-node1.txt").splitlines() if x.startswith("dropin=")]
    contents = {x.split()[0][7:]: base64.b64decode(x.split()[1]) for x in lines}
    assert contents["/etc/systemd/system/etcd.service.d/override.conf"] == (
        b"[Service]\nEnvironmentFile=\nEnvironmentFile=/etc/etcd/etcd.conf\n"
    )
    assert text("found-hand-node1.txt").startswith("client_url=http://")
