"""The hand-built runbook cluster (tests/e2e/handbuilt.py) really is one: before adopt's tests
rely on it, prove that its containers talk across hosts through the stand-in flanneld's TUN,
that its leases, files and units are what flanneld 0.7 and the runbook leave, and that
`snapshot` sees a change. Its own 2-host lab (the cluster is made by hand, not by init)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.labtools import cli, full_lab, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
NAMES = ["node1", "node2"]


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[state.LabState, hb.HandBuilt]]:
    with full_lab(2, "hb") as lab:
        started = time.monotonic()
        cluster = hb.build(lab, NAMES)
        print(f"handbuilt.build on 2 hosts: {time.monotonic() - started:.1f} s")  # shown with -s
        yield lab, cluster


def test_containers_ping_across_hosts_through_the_tun(built) -> None:
    lab, cluster = built
    for host, other in (("node1", "node2"), ("node2", "node1")):
        tx = f"cat /sys/class/net/{cluster.hosts[host].tun}/statistics/tx_packets"
        before = int(hb.run(lab, host, tx))
        for name in (hb.APP, hb.SOLO):
            ip = cluster.hosts[other].containers[name].ip
            assert hb.ping(lab, host, ip, container=name), (host, name, ip)
        # Each of the 6 requests left through flanneld's TUN (not some other route).
        assert int(hb.run(lab, host, tx)) >= before + 6, host


def test_leases_files_and_devices_are_flanneld_0_7s(built) -> None:
    lab, cluster = built
    leases = hb.v2_leases(hb.v2_dump(lab, "node1", hb.PREFIX))
    assert set(leases) == {h.address for h in cluster.hosts.values()}
    for name, host in cluster.hosts.items():
        lease = leases[host.address]
        assert json.loads(lease["value"]) == {"PublicIP": host.address}  # udp: no BackendType
        assert 86400 - 600 < lease["ttl"] <= 86400, lease
        gateway = host.subnet.replace(".0/24", ".1/24")
        env = hb.run(lab, name, "cat /run/flannel/subnet.env")
        assert env == (f"FLANNEL_NETWORK={hb.NETWORK}\nFLANNEL_SUBNET={gateway}\n"
                       "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")  # fmt: skip
        opts = hb.run(lab, name, "cat /run/flannel/docker")
        assert f'DOCKER_NETWORK_OPTIONS=" --bip={gateway} --ip-masq=true --mtu=1472"' in opts
        assert host.docker0 == gateway
        assert all(c.ip.startswith(gateway.rsplit(".", 1)[0] + ".") for c in
                   host.containers.values())  # fmt: skip
        tun = hb.run(lab, name, f"ip -d -o addr show {host.tun}; ip -d link show {host.tun}")
        assert f"inet {host.subnet.replace('/24', '/16')} " in tun and "mtu 1472" in tun
        assert "persist off" in tun, tun  # it vanishes with the process, as flanneld 0.7's
        route = hb.run(lab, name, f"ip route show {hb.NETWORK}")
        assert f"dev {host.tun}" in route, route


def test_units_and_etcd_are_the_runbooks(built) -> None:
    lab, cluster = built
    show = "systemctl show docker -p Requires -p Wants -p DropInPaths -p ExecStart"
    node1, node2 = hb.run(lab, "node1", show), hb.run(lab, "node2", show)
    assert "flanneld.service" in node1.split("Wants=")[1].split("\n")[0]  # the RPM's WantedBy
    assert "flanneld.service" in node2.split("Requires=")[1].split("\n")[0]  # hand-written
    assert "docker.service.d/override.conf" in node2 and "override.conf" not in node1
    assert "--bip=" in node1.split("ExecStart=")[1]  # the vendor unit, edited in place
    members = {m["name"]: m for m in hb.member_list(lab, "node2")}
    assert {n: m["ID"] for n, m in members.items()} == cluster.etcd.members
    node2_address = cluster.hosts["node2"].address
    assert f"http://{node2_address}:4001" in members["node1"]["clientURLs"]  # the slip
    assert all(u.startswith("http://") for m in members.values() for u in m["peerURLs"])
    kept = hb.run(lab, "node2", f"{hb.ETCDCTL3} get --print-value-only {hb.V3_KEY}")
    assert kept.strip() == cluster.etcd.v3_value
    sysconfig = hb.run(lab, "node1", "cat /etc/sysconfig/flanneld")
    assert "--etcd endpoints=" in sysconfig and f'FLANNEL_ETCD_PREFIX="{hb.PREFIX}"' in sysconfig


def test_flanneld_follows_lease_changes_in_v2(built) -> None:
    """A peer's lease appearing and going reaches every flanneld through its v2 watch."""
    lab, _ = built
    key = f"{hb.PREFIX}/subnets/172.21.250.0-24"
    log = "journalctl -u flanneld -o cat --no-pager | grep 'peers: ' | tail -1"

    def peers(host: str) -> str:  # the stand-in logs its peers at every change
        return hb.run(lab, host, log)

    hb.run(lab, "node2", f'{hb.ETCDCTL2} set --ttl 60 {key} \'{{"PublicIP":"192.0.2.9"}}\'')
    for host in NAMES:
        wait_for(lambda h=host: "172.21.250.0/24" in peers(h), 10, f"{host} learns the lease")
    hb.run(lab, "node2", f"{hb.ETCDCTL2} rm {key}")
    for host in NAMES:
        wait_for(lambda h=host: "172.21.250.0/24" not in peers(h), 10, f"{host} forgets it")


def test_a_restarted_flanneld_keeps_its_lease_and_snapshot_sees_it(built) -> None:
    """flanneld 0.7 reuses the lease of its own PublicIP (subnet.env aside); `snapshot` is
    stable while nothing changes, and shows the restart (flanneld's MainPID) and nothing else."""
    lab, cluster = built
    first = hb.snapshot(lab, NAMES, hb.PREFIX)
    assert hb.snapshot(lab, NAMES, hb.PREFIX) == first
    hb.run(lab, "node1", "rm /run/flannel/subnet.env && systemctl restart flanneld")
    after = hb.snapshot(lab, NAMES, hb.PREFIX)
    assert after != first
    changed = set(first["node1"]) ^ set(after["node1"])
    assert {line.split()[1] for line in changed} == {"flanneld"}, changed
    assert {k: v for k, v in after.items() if k != "node1"} == {
        k: v for k, v in first.items() if k != "node1"
    }
    assert cluster.hosts["node1"].subnet.replace(".0/24", ".1/24") in hb.run(
        lab, "node1", "cat /run/flannel/subnet.env"
    )
    assert hb.ping(lab, "node2", cluster.hosts["node1"].containers[hb.APP].ip)


def test_init_refuses_a_hand_built_cluster(built) -> None:
    """`overlayctl init` with the lab's inventory, the runbook's network and backend udp: exit 4
    naming `overlayctl adopt`, and `snapshot` unchanged (join, certs rotate and plan on the same
    cluster: tests/e2e/test_adopt_refuse.py)."""
    lab, _ = built
    inventory = hb.inventory(lab, NAMES)
    before = hb.snapshot(lab, NAMES, hb.PREFIX)
    result = cli(lab, "init", "-i", str(inventory))
    assert result.returncode == 4 and "overlayctl adopt" in result.stderr, result.stderr
    assert hb.snapshot(lab, NAMES, hb.PREFIX) == before
    assert on(lab, "node1", "systemctl is-active flanneld").returncode == 0
