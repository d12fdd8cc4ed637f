"""The three data planes on light lab hosts: real kernel devices, real pings between containers.

Each host has a ``docker0`` bridge at its subnet's .1, one container namespace at .2, IP
forwarding on and docker's FORWARD policy DROP; the backend runs inside the host through
tests/dataplane_driver.py with flannel's iptables rules (FLANNEL-FWD, FLANNEL-POSTRTG).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dataplane_driver import Cluster, _child_of
from tests.polling import wait_for

pytestmark = pytest.mark.lab

DEVICES = {"vxlan": "flannel.1", "udp": "flannel0", "host-gw": None}
MTUS = {"vxlan": 1450, "udp": 1472, "host-gw": 1500}


def _subnet_routes(cluster: Cluster, node, subnet: str) -> list[str]:
    return [r for r in cluster.routes(node) if r.split()[0] == subnet]


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_three_hosts_containers_ping_resync_remove_peer_teardown(light_lab, backend) -> None:
    with Cluster(light_lab, backend) as cluster:
        h1, h2, h3 = cluster.nodes
        cluster.start_all()
        assert {n.ready["mtu"] for n in cluster.nodes} == {MTUS[backend]}
        if backend == "vxlan":
            macs = {n.ready["backend_data"]["VtepMAC"] for n in cluster.nodes}
            assert len(macs) == 3 and all(
                n.ready["backend_data"]["VNI"] == 1 for n in cluster.nodes
            )
        applied = cluster.mesh()
        assert [a["errors"] for a in applied] == [[], [], []]
        assert cluster.ping_failures() == []

        device = DEVICES[backend]
        if device is not None:
            link = cluster.run(h1, "ip", "-d", "link", "show", device)
            assert f"mtu {MTUS[backend]}" in link
            if backend == "vxlan":
                assert "vxlan id 1 " in link and "dstport 8472" in link and "nolearning" in link
                assert f"local {h1.host.address} dev eth0" in link
                assert "inet 10.5.1.0/32" in cluster.run(h1, "ip", "-4", "addr", "show", device)
                neigh = cluster.run(h1, "ip", "neigh", "show", "dev", device)
                assert f"10.5.2.0 lladdr {h2.ready['backend_data']['VtepMAC']} PERMANENT" in neigh
                fdb = cluster.run(h1, "bridge", "fdb", "show", "dev", device)
                assert f"{h3.ready['backend_data']['VtepMAC']} dst {h3.host.address}" in fdb
                assert "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink" in cluster.routes(h1)
            if backend == "udp":
                assert "inet 10.5.1.0/16 scope global flannel0" in cluster.run(
                    h1, "ip", "-4", "addr", "show", device
                )
        if backend == "host-gw":
            assert f"10.5.3.0/24 via {h3.host.address} dev eth0" in cluster.routes(h1)

        # setup + sync_peers again, twice: nothing duplicated, nothing lost, no errors.
        for _ in range(2):
            assert [a["errors"] for a in cluster.mesh(resync=True)] == [[], [], []]
        for node in cluster.nodes:
            for other in cluster.nodes:
                if other is not node:
                    assert len(_subnet_routes(cluster, node, other.subnet)) == (
                        0 if backend == "udp" else 1
                    ), cluster.routes(node)
        forward = cluster.run(h1, "iptables", "-S", "FORWARD")
        assert forward.count("-j FLANNEL-FWD") == 1
        assert (
            cluster.run(h1, "iptables", "-t", "nat", "-S", "POSTROUTING").count(
                "-j FLANNEL-POSTRTG"
            )
            == 1
        )
        assert cluster.ping_failures() == []

        # remove_peer: h1 forgets h3 only.
        got = cluster.publish(h1, [h2.lease(backend)])
        assert got["errors"] == []
        assert got["stats"]["peers"] == 1
        assert _subnet_routes(cluster, h1, h3.subnet) == []
        if backend == "vxlan":
            assert "10.5.3.0" not in cluster.run(h1, "ip", "neigh", "show", "dev", "flannel.1")
            fdb = cluster.run(h1, "bridge", "fdb", "show", "dev", "flannel.1")
            assert h3.host.address not in fdb and h2.host.address in fdb
        assert cluster.ping_procs([(h1, h3.container_ip), (h1, h2.container_ip)], count=1) == [
            False,
            True,
        ]
        if backend == "udp":
            stats = cluster.publish(h1, [h2.lease(backend)])["stats"]
            assert stats["tx_drops_unknown_subnet"] >= 1
            assert stats["tx_packets"] > 0 and stats["rx_packets"] > 0
            assert stats["tx_bytes"] > stats["tx_packets"] * 20

        # teardown: no device, no overlay routes, no flannel iptables chains.
        for node in cluster.nodes:
            cluster.stop(node)
            assert node.read("stopped.json") == {"teardown": True}
            left = [r for r in cluster.routes(node) if r.startswith("10.5.") and "docker0" not in r]
            assert left == []
            links = cluster.run(node, "ip", "-o", "link", "show")
            assert "flannel" not in links
            assert "FLANNEL" not in cluster.run(node, "iptables", "-S")
            assert "FLANNEL" not in cluster.run(node, "iptables", "-t", "nat", "-S")


def test_hostgw_refuses_a_peer_on_another_segment_and_routes_the_rest(light_lab) -> None:
    with Cluster(light_lab, "host-gw", count=2) as cluster:
        h1, h2 = cluster.nodes
        cluster.start_all()
        far = {
            "subnet": "10.5.9.0/24",
            "PublicIP": "10.99.0.9",
            "BackendType": "host-gw",
            "BackendData": None,
        }
        cluster.publish(h2, [h1.lease("host-gw")])
        first = cluster.publish(h1, [h2.lease("host-gw"), far])  # sync_peers
        assert any("10.99.0.9 is not on the same L2 segment as eth0" in e for e in first["errors"])
        assert first["stats"] == {"peers": 1, "routes_programmed": 1, "peers_refused": 1}
        assert cluster.ping_failures() == []
        # The same lease as an add_peer later: a BackendError, the driver keeps running.
        cluster.publish(h1, [h2.lease("host-gw")])
        later = cluster.publish(h1, [h2.lease("host-gw"), far])
        assert any(
            e.startswith("BackendError: host-gw: not routing 10.5.9.0/24") for e in later["errors"]
        )
        assert not any(r.startswith("10.5.9.0/24") for r in cluster.routes(h1))
        assert cluster.ping_failures() == []


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_restart_keeps_the_data_plane_and_sync_removes_stale_entries(light_lab, backend) -> None:
    per_peer_routes = 0 if backend == "udp" else 1
    with Cluster(light_lab, backend) as cluster:
        h1, h2, h3 = cluster.nodes
        cluster.start_all(teardown=False)
        cluster.mesh()
        before = h1.ready["backend_data"]
        cluster.stop(h1)  # no teardown: the kernel state stays
        assert h1.read("stopped.json") == {"teardown": False}
        if backend == "udp":  # flannel0 stays (persistent TUN), only the forwarder is gone
            assert "inet 10.5.1.0/16" in cluster.run(h1, "ip", "-4", "addr", "show", "flannel0")
        else:  # kernel forwarding: traffic keeps flowing without the agent
            assert cluster.ping_failures() == []
        again = cluster.start(h1, teardown=False)
        assert again["backend_data"] == before  # vxlan: same VtepMAC, the peers' entries stay
        # h3 went away while h1 was down: the first snapshot lacks it.
        got = cluster.publish(h1, [h2.lease(backend)])
        assert got["errors"] == [] and got["stats"]["peers"] == 1
        assert _subnet_routes(cluster, h1, h3.subnet) == []
        assert len(_subnet_routes(cluster, h1, h2.subnet)) == per_peer_routes
        if backend == "vxlan":
            neigh = cluster.run(h1, "ip", "neigh", "show", "dev", "flannel.1")
            assert "10.5.3.0" not in neigh and "10.5.2.0" in neigh
            fdb = cluster.run(h1, "bridge", "fdb", "show", "dev", "flannel.1")
            assert h3.host.address not in fdb and h2.host.address in fdb
        assert cluster.ping_procs(
            [(h1, h2.container_ip), (h2, h1.container_ip), (h1, h3.container_ip)], count=1
        ) == [True, True, False]


def test_udp_takes_over_from_the_routes_a_host_gw_run_left(light_lab) -> None:
    """A day-2 switch host-gw -> udp: host-gw's per-peer routes via the peer on the external
    interface are narrower than flannel0's Network route and would carry the traffic past the
    overlay. The udp agent removes them as it sets flannel0 up; other routes stay."""
    with Cluster(light_lab, "udp", count=2) as cluster:
        h1, h2 = cluster.nodes
        dev = cluster.run(h1, "ip", "-4", "route", "get", h2.host.address).split(" dev ")[1]
        dev = dev.split()[0]
        cluster.run(h1, "ip", "route", "add", h2.subnet, "via", h2.host.address, "dev", dev)
        cluster.run(h1, "ip", "route", "add", "10.99.0.0/24", "via", h2.host.address)  # outside
        assert _subnet_routes(cluster, h1, h2.subnet) != []
        cluster.start_all()
        cluster.mesh()
        assert _subnet_routes(cluster, h1, h2.subnet) == []
        assert _subnet_routes(cluster, h1, "10.99.0.0/24") != []
        assert cluster.ping_failures() == []


def test_vxlan_peer_with_a_new_vtep_mac_is_replaced_exactly(light_lab) -> None:
    with Cluster(light_lab, "vxlan", count=2) as cluster:
        h1, h2 = cluster.nodes
        cluster.start_all()
        cluster.mesh()
        old_mac = h2.ready["backend_data"]["VtepMAC"]
        cluster.stop(h2)  # with teardown: flannel.1 is deleted, the next one has a new MAC
        new_mac = cluster.start(h2)["backend_data"]["VtepMAC"]
        assert new_mac != old_mac
        cluster.publish(h2, [h1.lease("vxlan")])
        got = cluster.publish(h1, [h2.lease("vxlan")])  # replace_peer(old, new)
        assert got["errors"] == [] and got["stats"]["peers"] == 1
        fdb = cluster.run(h1, "bridge", "fdb", "show", "dev", "flannel.1")
        assert f"{new_mac} dst {h2.host.address}" in fdb and old_mac not in fdb
        neigh = cluster.run(h1, "ip", "neigh", "show", "dev", "flannel.1")
        assert f"10.5.2.0 lladdr {new_mac} PERMANENT" in neigh and old_mac not in neigh
        assert len(_subnet_routes(cluster, h1, h2.subnet)) == 1
        assert cluster.ping_failures() == []


def test_a_driver_that_ignores_sigterm_fails_the_teardown(light_lab) -> None:
    """The harness itself: a driver that does not stop would skip its teardown unseen."""
    cluster = Cluster(light_lab, "host-gw", count=1)
    (node,) = cluster.nodes
    cluster.start(node, ignore_sigterm=True)
    assert node.proc is not None
    pid = _child_of(node.proc.pid)  # the driver under nsenter, as the machine numbers it
    with pytest.raises(RuntimeError) as info:
        cluster.close(timeout=1)
    assert str(info.value).startswith(
        f"teardown: RuntimeError: driver on h1 (pid {pid}) ignored SIGTERM for 1 s and was killed"
    )
    # Killed, not left running: gone, or a zombie for the host's init to reap (SIGKILL takes a
    # moment to end a process, so this is polled).
    wait_for(lambda: _state(pid) in ("gone", "Z"), 5, f"the killed driver (pid {pid}) to end")


def _state(pid: int | None) -> str:
    """PID's state letter from /proc (R, S, Z...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
