"""The admin's allow-list and the peers-only data plane, with real agents, a real etcd and the
kernel's netfilter, on light lab hosts (issue 17, items 1 and 2).

h1 and h2 run overlay-agent (vxlan, then udp); x is a lab host on the same LAN with no agent:
the outsider. A lease naming x's address is ignored while the allow-list lacks it; hand-made
tunnel packets from x never reach h2's container while the same ones from h1 do; the chain
comes back when deleted by hand, and goes with a clean shutdown.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from overlayctl.lab.light import LightHost, LightLab
from tests.dataplane_driver import _child_of, ip, plumb_container
from tests.integration.agent.lab_agents import (
    PREFIX,
    agent_log,
    etcdctl,
    start_agent,
    start_etcd,
    wait_subnet,
)
from tests.integration.conftest import ETCD_BIN
from tests.polling import wait_for

pytestmark = pytest.mark.lab

INJECT = Path(__file__).with_name("inject_frames.py")
PORTS = {"vxlan": 8472, "udp": 8285}
HEALTHZ = 8471
OUTSIDE = "10.6.200.0/24"
SENT = 5


def _allow(store: LightHost, url: str, hosts: list[LightHost] | None) -> None:
    key = f"{PREFIX}/allowed-public-ips"
    if hosts is None:
        assert etcdctl(store, url, "del", key).returncode == 0
        return
    value = json.dumps({"PublicIPs": [h.address for h in hosts]})
    assert etcdctl(store, url, "put", key, value).returncode == 0


def _metric(host: LightHost, name: str) -> float | None:
    text = host.run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{HEALTHZ}/metrics"]).stdout
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _chain(host: LightHost) -> list[str]:
    out = host.run(["iptables", "-S", "OVERLAY-PEERS"], check=False).stdout
    return [x for x in out.splitlines() if x.startswith("-A ")]


def _want_chain(*peers: LightHost) -> list[str]:
    ips = sorted(IPv4Address(p.address) for p in peers)
    return [*(f"-A OVERLAY-PEERS -s {a}/32 -j RETURN" for a in ips), "-A OVERLAY-PEERS -j DROP"]


def _jumps(host: LightHost) -> list[str]:
    out = host.run(["iptables", "-S", "INPUT"]).stdout
    return [x for x in out.splitlines() if x.endswith("-j OVERLAY-PEERS")]


def _plumb_container(host: LightHost, subnet: str, cns: str) -> str:
    """docker0 at SUBNET's .1 in HOST and a container namespace CNS at .2 (no IPv6: its
    router and neighbour messages would move the counters); the container's address."""
    gateway, container = subnet.replace(".0/24", ".1"), subnet.replace(".0/24", ".2")
    host.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
              "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
    plumb_container(host, cns, gateway, container)
    subprocess.run(
        ["ip", "netns", "exec", cns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    return container


def _in_container(cns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", cns, *argv], check=True, capture_output=True,
                          text=True, timeout=10).stdout  # fmt: skip


def _rx(cns: str) -> int:
    """Packets the container's eth0 received (its veth's rx counter)."""
    link = json.loads(ip("-n", cns, "-j", "-s", "link", "show", "eth0").stdout)[0]
    return int(link["stats64"]["rx"]["packets"])


def _pings_in(cns: str, src: str) -> int:
    """ICMP packets from SRC the container received: a counting rule (no target) in its
    INPUT, exact where the link counter also sees the odd neighbour or multicast packet."""
    for line in _in_container(cns, "iptables", "-w", "5", "-nvxL", "INPUT").splitlines():
        if src in line.split():
            return int(line.split()[0])
    _in_container(cns, "iptables", "-w", "5", "-A", "INPUT", "-s", src, "-p", "icmp")
    return 0


def _send(src: LightHost, backend: str, dest: LightHost, inner: tuple[str, str], mac: str) -> None:
    src.run([sys.executable, str(INJECT), backend, dest.address, str(PORTS[backend]),
             str(SENT), *inner, mac])  # fmt: skip


def _lease(backend: str, public_ip: str) -> str:
    data = {"VNI": 1, "VtepMAC": "02:00:00:00:00:99"} if backend == "vxlan" else None
    return json.dumps({"PublicIP": public_ip, "BackendType": backend, "BackendData": data})


def _has_route(host: LightHost, subnet: str) -> bool:
    return any(x.startswith(subnet) for x in host.run(["ip", "-4", "route"]).stdout.splitlines())


@pytest.mark.parametrize("backend", ["vxlan", "udp"])
def test_allow_list_and_peers_only_data_plane(light_lab: LightLab, backend: str) -> None:
    if not ETCD_BIN:
        pytest.skip("no etcd binary")
    store, h1, h2, x = (light_lab.add_host(n) for n in ("etcd", "h1", "h2", "x"))
    procs: list[subprocess.Popen] = []
    cns = f"{light_lab.name}-c2"
    try:
        url = start_etcd(store, procs, backend)
        _allow(store, url, [h1, h2])
        options = (f"--healthz-port={HEALTHZ}", "--iptables-resync=1s",
                   "--allowlist-check-interval=1s", "--cleanup-on-exit")  # fmt: skip
        agent1 = start_agent(h1, url, procs, *options)
        start_agent(h2, url, procs, *options)
        s1, s2 = wait_subnet(h1), wait_subnet(h2)
        for host, peer in ((h1, h2), (h2, h1)):
            wait_for(lambda h=host, p=peer: _chain(h) == _want_chain(p), 15,
                     f"OVERLAY-PEERS on {host.name} ({agent_log(host)[-600:]})")  # fmt: skip
            assert _jumps(host) == [
                f"-A INPUT -p udp -m udp --dport {PORTS[backend]} -m comment --comment "
                '"overlay-agent peers only" -j OVERLAY-PEERS'
            ]
        assert (
            host.run(["iptables", "-S", "INPUT"])
            .stdout.splitlines()[1]
            .endswith("-j OVERLAY-PEERS")
        )  # first in INPUT, before any broad accept

        # (a) A lease naming the outsider: ignored, reported, nothing installed for it.
        key = f"{PREFIX}/subnets/{OUTSIDE.replace('/', '-')}"
        assert etcdctl(store, url, "put", key, _lease(backend, x.address)).returncode == 0
        for host in (h1, h2):
            wait_for(lambda h=host: _metric(h, "overlay_agent_leases_refused") == 1, 10,
                     f"{host.name} counts the refused lease")  # fmt: skip
            assert _metric(host, "overlay_agent_peers") == 1
            assert not _has_route(host, OUTSIDE) and _chain(host) == _want_chain(
                h2 if host is h1 else h1
            )
            if backend == "vxlan":
                assert x.address not in host.run(["bridge", "fdb", "show"]).stdout
                assert "10.6.200.0" not in host.run(["ip", "neigh", "show"]).stdout
        ready = json.loads(host.run(["curl", "-s", f"http://127.0.0.1:{HEALTHZ}/readyz"]).stdout)
        assert ready["refused"] == [{"subnet": OUTSIDE, "public_ip": x.address}]
        assert agent_log(h1).count(f"its PublicIP {x.address} is not in") == 1

        # (b) Hand-made tunnel packets to h2's container: from x dropped, from h1 delivered.
        container = _plumb_container(h2, s2, cns)
        inner = (s1.replace(".0/24", ".5"), container)
        link = json.loads(h2.run(["ip", "-j", "link", "show", "flannel.1"], check=False).stdout
                          or "[{}]")[0]  # fmt: skip
        mac = link.get("address", "00:00:00:00:00:00")
        before, rx = _pings_in(cns, inner[0]), _rx(cns)
        _send(x, backend, h2, inner, mac)
        time.sleep(1.0)
        assert _pings_in(cns, inner[0]) == before, "packets from a non-peer reached the container"
        assert _rx(cns) - rx < SENT  # the link saw none of them either (at most stray noise)
        _send(h1, backend, h2, inner, mac)
        wait_for(lambda: _pings_in(cns, inner[0]) == before + SENT, 5,
                 "packets from a peer reach the container")  # fmt: skip
        assert _rx(cns) - rx >= SENT

        # The admin adds x: its lease is programmed and its packets get in.
        _allow(store, url, [h1, h2, x])
        wait_for(lambda: _chain(h2) == _want_chain(h1, x), 10, "x let in on h2")
        assert _metric(h2, "overlay_agent_leases_refused") == 0
        if backend == "vxlan":
            wait_for(lambda: _has_route(h1, OUTSIDE), 10, "h1 routes the admitted lease")
        before = _pings_in(cns, inner[0])
        _send(x, backend, h2, inner, mac)
        wait_for(lambda: _pings_in(cns, inner[0]) == before + SENT, 5,
                 "packets from an admitted peer arrive")  # fmt: skip
        # ... removes it again: what was installed for it goes; without the key, all admitted.
        _allow(store, url, [h1, h2])
        wait_for(lambda: _chain(h1) == _want_chain(h2) and not _has_route(h1, OUTSIDE), 10,
                 "x's chain entry and route removed on h1")  # fmt: skip
        _allow(store, url, None)
        wait_for(lambda: _chain(h1) == _want_chain(h2, x), 10, "no list: every lease accepted")
        assert _metric(h1, "overlay_agent_leases_refused") == 0

        # (c) The chain deleted by hand comes back at the next resync; edited, too.
        for jump in _jumps(h1):
            h1.run(["iptables", "-D", *shlex.split(jump)[1:]])
        h1.run(["iptables", "-F", "OVERLAY-PEERS"])
        h1.run(["iptables", "-X", "OVERLAY-PEERS"])
        assert _jumps(h1) == [] and _chain(h1) == []
        wait_for(lambda: _chain(h1) == _want_chain(h2, x) and len(_jumps(h1)) == 1, 5,
                 "the resync re-asserts the chain")  # fmt: skip
        h1.run(["iptables", "-I", "OVERLAY-PEERS", "1", "-j", "ACCEPT"])
        wait_for(lambda: _chain(h1) == _want_chain(h2, x), 5, "the resync repairs the chain")

        # A clean shutdown (--cleanup-on-exit) removes the chain and its jump.
        pid = _child_of(agent1.pid)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        agent1.wait(timeout=10)
        assert "OVERLAY-PEERS" not in h1.run(["iptables", "-S"]).stdout
    finally:
        light_lab.close()  # kills every process of every host (their PID 1)
        for proc in procs:
            proc.wait(timeout=10)
        ip("netns", "delete", cns, check=False)
