"""plan.py and facts.py: pure decisions from facts, no hosts."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.inventory import parse_inventory
from overlayctl.phases.planner import plan_host
from overlayctl.plan.changes import DesiredFile, FileChange
from overlayctl.plan.facts import Facts, RemoteFile, UnitState, os_family, parse_facts

FACTS_OUTPUT = """os_id=debian
os_like=
os_version=12
arch=x86_64
hostname=node1
python=3.11
pkg_manager=apt-get
ip_forward=1
systemd=yes
unit=etcd active enabled
etcd_data=/var/lib/etcd/node1.etcd
addr=lo 127.0.0.1/8
addr=eth0@if3 192.168.255.154/24
pkg=iptables
pkg=iproute2
pkg=etcd-client
pkg=etcd-server
pkg=iputils-ping
pkg=python3
pkg=python3-venv
pkg=docker.io
"""


def inventory():
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian"},
        "ssh": {"user": "root"},
        "hosts": [{"name": "node1", "address": "192.168.255.154"}],
    }
    inv, _ = parse_inventory(doc, Path("/nonexistent"))
    return inv


def facts(**changes) -> Facts:
    return dataclasses.replace(parse_facts(FACTS_OUTPUT), **changes)


def desired() -> dict[str, DesiredFile]:
    return {
        hp.HOSTS: DesiredFile(b"127.0.0.1 localhost\n", 0o644, "root"),
        hp.ETCD_CONF: DesiredFile(b'ETCD_NAME="node1"\n', 0o644, "root"),
        hp.ETCD_SERVER_KEY: DesiredFile(b"-----BEGIN PRIVATE KEY-----\nSECRET\n", 0o600, "etcd"),
    }


def current_matching() -> dict[str, RemoteFile]:
    owners = {hp.ETCD_SERVER_KEY: "etcd:etcd"}
    return {
        p: RemoteFile(p, f.content, f.mode, owners.get(p, "root:root"))
        for p, f in desired().items()
    }


def test_parse_facts() -> None:
    f = parse_facts(FACTS_OUTPUT)
    assert (f.os_family, f.hostname, f.pkg_manager, f.ip_forward) == (
        "debian",
        "node1",
        "apt-get",
        True,
    )
    assert f.units["etcd"] == UnitState("active", "enabled")
    assert f.iface_of(ipaddress.IPv4Address("192.168.255.154")) == "eth0"
    assert f.iface_of(ipaddress.IPv4Address("10.0.2.15")) is None
    assert "etcd-server" in f.packages


@pytest.mark.parametrize(("os_id", "like", "family"), [
    ("debian", "", "debian"), ("ubuntu", "debian", "debian"), ("rocky", "rhel centos fedora",
    "rhel"), ("centos", "rhel fedora", "rhel"), ("almalinux", "rhel", "rhel"), ("arch", "", None),
])  # fmt: skip
def test_os_family(os_id: str, like: str, family: str | None) -> None:
    assert os_family(os_id, like) == family


def test_everything_in_place_plans_nothing() -> None:
    host = inventory().hosts[0]
    plan = plan_host(host, "debian", desired(), current_matching(), facts())
    assert plan.changes == 0


def test_changed_etcd_config_restarts_a_running_etcd_and_nothing_else() -> None:
    host = inventory().hosts[0]
    current = current_matching()
    current[hp.ETCD_CONF] = RemoteFile(hp.ETCD_CONF, b"old\n", 0o644, "root:root")
    plan = plan_host(host, "debian", desired(), current, facts())
    assert [(c.path, c.kind) for c in plan.files] == [(hp.ETCD_CONF, "update")]
    assert [str(a) for a in plan.actions] == ["restart etcd"]


def test_fresh_host_installs_enables_and_starts() -> None:
    host = inventory().hosts[0]
    bare = facts(
        hostname="localhost",
        ip_forward=False,
        packages=frozenset({"iptables"}),
        units={"etcd": UnitState("inactive", "")},
    )
    plan = plan_host(host, "debian", desired(), {}, bare)
    kinds = [(a.phase, a.kind) for a in plan.actions]
    assert kinds == [
        ("prepare", "hostname"),
        ("prepare", "sysctl"),
        ("packages", "install"),
        ("etcd", "enable"),
        ("etcd", "start"),
    ]
    install = next(a for a in plan.actions if a.kind == "install")
    assert install.target == (
        "iproute2 etcd-client iputils-ping etcd-server python3 python3-venv docker.io"
    )
    assert [c.kind for c in plan.files] == ["create"] * 3
    assert [c.phase for c in plan.files] == ["prepare", "pki", "etcd"]


def test_mode_or_owner_drift_is_a_change_without_content_diff() -> None:
    host = inventory().hosts[0]
    current = current_matching()
    current[hp.ETCD_SERVER_KEY] = dataclasses.replace(current[hp.ETCD_SERVER_KEY], mode=0o644)
    plan = plan_host(host, "debian", desired(), current, facts())
    (change,) = plan.files
    assert change.kind == "attributes"
    assert change.diff() == f"# {hp.ETCD_SERVER_KEY}: mode 0644 -> 0600, owner etcd -> etcd\n"


def test_private_keys_never_appear_in_a_diff() -> None:
    key = DesiredFile(b"-----BEGIN PRIVATE KEY-----\nSECRET\n", 0o600, "etcd")
    old = RemoteFile(hp.ETCD_SERVER_KEY, b"-----BEGIN PRIVATE KEY-----\nOLD\n", 0o600, "etcd:etcd")
    for current in (old, RemoteFile(hp.ETCD_SERVER_KEY, None)):
        text = FileChange("pki", hp.ETCD_SERVER_KEY, key, current).diff()
        assert "SECRET" not in text and "OLD" not in text
        assert "content not shown" in text


def test_a_diff_is_unified_with_paths() -> None:
    change = FileChange(
        "prepare",
        hp.HOSTS,
        DesiredFile(b"a\nb\n", 0o644, "root"),
        RemoteFile(hp.HOSTS, b"a\nc\n", 0o644, "root:root"),
    )
    assert change.diff().splitlines() == [
        "--- a/etc/hosts",
        "+++ b/etc/hosts",
        "@@ -1,2 +1,2 @@",
        " a",
        "-c",
        "+b",
    ]


def test_etcd_conf_differing_only_in_bootstrap_lines_is_left_alone() -> None:
    host = inventory().hosts[0]
    want = desired()
    want[hp.ETCD_CONF] = DesiredFile(
        b'ETCD_NAME="node1"\nETCD_INITIAL_CLUSTER="node1=https://a:2380,node2=https://b:2380"\n'
        b'ETCD_INITIAL_CLUSTER_STATE="new"\n',
        0o644,
        "root",
    )
    current = current_matching()
    current[hp.ETCD_CONF] = RemoteFile(
        hp.ETCD_CONF,
        b'ETCD_NAME="node1"\nETCD_INITIAL_CLUSTER="node1=https://a:2380"\n'
        b'ETCD_INITIAL_CLUSTER_STATE="existing"\n',
        0o644,
        "root:root",
    )
    assert plan_host(host, "debian", want, current, facts()).changes == 0
    # before the member has data, the bootstrap lines are what counts: rewrite them
    fresh = facts(etcd_data_dirs=frozenset())
    assert [c.path for c in plan_host(host, "debian", want, current, fresh).files] == [hp.ETCD_CONF]
    current[hp.ETCD_CONF] = RemoteFile(hp.ETCD_CONF, b'ETCD_NAME="other"\n', 0o644, "root:root")
    assert [str(a) for a in plan_host(host, "debian", want, current, facts()).actions] == [
        "restart etcd"
    ]


def test_agent_and_docker_follow_the_wheelhouse_and_their_files() -> None:
    host = inventory().hosts[0]
    running = facts(agent_digest="abc", units={
        "etcd": UnitState("active", "enabled"), "overlay-agent": UnitState("active", "enabled"),
        "docker": UnitState("active", "enabled")})  # fmt: skip
    same = plan_host(host, "debian", desired(), current_matching(), running, agent_digest="abc")
    assert same.changes == 0
    new = plan_host(host, "debian", desired(), current_matching(), running, agent_digest="def")
    assert [str(a) for a in new.actions] == ["install-agent def", "restart overlay-agent"]
    bare = facts(units={"etcd": UnitState("active", "enabled")})
    first = plan_host(host, "debian", desired(), current_matching(), bare, agent_digest="abc")
    assert [(a.phase, str(a)) for a in first.actions] == [
        ("agent", "install-agent abc"),
        ("agent", "enable overlay-agent"),
        ("agent", "start overlay-agent"),
        ("docker", "enable docker"),
        ("docker", "start docker"),
    ]


def test_an_agent_running_an_older_install_than_the_one_in_place_is_restarted() -> None:
    """A run cut between the agent's install and its restart leaves every file in place: only
    the digest the running agent started with (its unit copies it as it starts) tells that the
    restart is owed. A unit from before that copy (nothing said) is not judged."""
    host = inventory().hosts[0]
    units = {"etcd": UnitState("active", "enabled"), "docker": UnitState("active", "enabled"),
             "overlay-agent": UnitState("active", "enabled")}  # fmt: skip
    for started, actions in (("old", ["restart overlay-agent"]), ("abc", []), (None, []), ("", [])):
        running = facts(agent_digest="abc", agent_started_digest=started, units=units)
        plan = plan_host(host, "debian", desired(), current_matching(), running, agent_digest="abc")
        assert [str(a) for a in plan.actions] == actions, started
    said = parse_facts(FACTS_OUTPUT + "agent_digest=abc\nagent_started_digest=old\n")
    assert (said.agent_digest, said.agent_started_digest) == ("abc", "old")
    assert parse_facts(FACTS_OUTPUT).agent_started_digest is None
