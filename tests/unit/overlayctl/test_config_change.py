"""A network config replaced in etcd (issue #16 item 2): what it means for each host's plan."""

from __future__ import annotations

from pathlib import Path

from overlayctl.inventory import parse_inventory
from overlayctl.inventory.model import Host, Inventory
from overlayctl.plan.changes import Action, HostPlan
from overlayctl.plan.config_change import (
    ConfigChange,
    add_config_change,
    config_change_actions,
    overlay_device,
)

VXLAN = {"Network": "172.21.0.0/16", "Backend": {"Type": "vxlan"}}
HOSTGW = {"Network": "172.21.0.0/16", "Backend": {"Type": "host-gw"}}
UDP = {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}}


def inventory(roles: list[str]) -> Inventory:
    data = {"cluster": {"name": "c", "network": "172.21.0.0/16"},
            "hosts": [{"name": "node1", "address": "192.0.2.1", "roles": roles}]}  # fmt: skip
    return parse_inventory(data, base_dir=Path("/inv"))[0]


def node(roles: tuple[str, ...] = ("etcd", "node")) -> Host:
    return inventory(list(roles)).hosts[0]


def test_devices_follow_the_backend() -> None:
    assert overlay_device(VXLAN) == "flannel.1"
    assert overlay_device({**VXLAN, "Backend": {"Type": "vxlan", "VNI": 7}}) == "flannel.7"
    assert overlay_device(UDP) == "flannel0"
    assert overlay_device(HOSTGW) is None
    assert overlay_device({"Backend": "junk"}) is None  # unreadable: nothing to remove


def test_a_backend_change_restarts_the_agent_after_removing_the_old_device() -> None:
    assert config_change_actions(node(), VXLAN, HOSTGW) == [
        Action("agent", "remove-device", "flannel.1"),
        Action("agent", "restart", "overlay-agent"),
    ]
    assert config_change_actions(node(), HOSTGW, UDP) == [
        Action("agent", "restart", "overlay-agent")
    ]


def test_nothing_when_unchanged_unknown_or_not_a_node() -> None:
    assert config_change_actions(node(), VXLAN, VXLAN) == []
    assert config_change_actions(node(), None, VXLAN) == []
    assert config_change_actions(node(("etcd",)), VXLAN, HOSTGW) == []


def test_added_to_a_plan_before_its_own_agent_start_without_a_second_restart() -> None:
    plan = HostPlan("node1", actions=[Action("agent", "install-agent", "abc"),
                                      Action("agent", "restart", "overlay-agent")])  # fmt: skip
    add_config_change({"node1": plan}, inventory(["etcd", "node"]), ConfigChange(VXLAN, HOSTGW))
    assert [str(a) for a in plan.actions] == [
        "install-agent abc", "remove-device flannel.1", "restart overlay-agent",
    ]  # fmt: skip
    text = ConfigChange(VXLAN, HOSTGW).describe()
    assert "its flannel.1 removed" in text and "restarts the agent on every node host" in text


def test_network_and_prefix_cannot_change_on_a_running_cluster() -> None:
    import pytest

    from overlayctl.errors import Conflict
    from overlayctl.plan.changes import DesiredFile, FileChange
    from overlayctl.plan.config_change import refuse_fixed_changes
    from overlayctl.plan.facts import RemoteFile

    inv = inventory(["etcd", "node"])
    moved = {**VXLAN, "Network": "10.99.0.0/16"}
    with pytest.raises(Conflict, match=r"Network cannot change .* docs/runbooks/change-network"):
        refuse_fixed_changes(ConfigChange(VXLAN, moved), {}, inv)
    refuse_fixed_changes(ConfigChange(VXLAN, HOSTGW), {}, inv)  # a backend change may go on
    env = "/etc/default/overlay-agent"
    old = RemoteFile(env, b'FLANNEL_ETCD_PREFIX="/atomic.io/network"\n', 0o644, "root:root")
    plan = HostPlan(
        "node1", files=[FileChange("agent", env, DesiredFile(b"x", 0o644, "root"), old)]
    )
    with pytest.raises(Conflict, match=r"node1: cluster.etcd_prefix cannot change"):
        refuse_fixed_changes(None, {"node1": plan}, inv)


def test_tls_cannot_be_switched_on_a_running_cluster() -> None:
    import pytest

    from overlayctl.errors import Conflict
    from overlayctl.plan.changes import DesiredFile, FileChange
    from overlayctl.plan.config_change import refuse_fixed_changes
    from overlayctl.plan.facts import RemoteFile

    conf = "/etc/etcd/etcd.conf"

    def change(old: bytes, new: bytes) -> dict[str, HostPlan]:
        have = RemoteFile(conf, old, 0o644, "root:root")
        return {"node1": HostPlan("node1", files=[
            FileChange("etcd", conf, DesiredFile(new, 0o644, "root"), have)])}  # fmt: skip

    http = b'ETCD_LISTEN_PEER_URLS="http://192.0.2.1:2380"\n'
    https = b'ETCD_LISTEN_PEER_URLS="https://192.0.2.1:2380"\n'
    with pytest.raises(Conflict, match=r"node1: cluster\.tls cannot change"):
        refuse_fixed_changes(None, change(http, https), inventory(["etcd", "node"]))
    refuse_fixed_changes(None, change(https, https + b"# other\n"), inventory(["etcd", "node"]))
    refuse_fixed_changes(None, change(b"", https), inventory(["etcd", "node"]))  # a fresh host


def test_docker_runs_on_the_lease_with_the_agents_flags() -> None:
    from overlayctl.phases.docker import docker_runs_on

    lease = "172.21.5.1/24"
    state = (f"docker0={lease}\nwant= --bip={lease} --ip-masq=true --mtu=1450\n"
             "arg=/usr/sbin/dockerd\narg=-H\narg=fd://\n"
             f"arg=--bip={lease}\narg=--ip-masq=true\narg=--mtu=1450\n")  # fmt: skip
    assert docker_runs_on(state, lease)
    assert not docker_runs_on(state.replace("--mtu=1450\n", "--mtu=1500\n", 1), lease)  # new MTU
    assert not docker_runs_on(state, "172.21.6.1/24")  # docker0 elsewhere
    stopped = "\n".join(line for line in state.splitlines() if not line.startswith("arg="))
    assert not docker_runs_on(stopped, lease)  # docker0 outlives a stopped docker
