"""Three real overlay-agents with the real host-gw and vxlan backends on light lab hosts.

etcd runs inside a fourth light host and the agents reach it over the lab LAN; everything
(etcd, agents, routes) lives in the lab's namespaces and dies with the lab.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from overlayctl.lab.light import LightHost, LightLab
from tests.integration.agent.lab_agents import start_agent, start_etcd
from tests.integration.conftest import ETCD_BIN
from tests.polling import wait_for

pytestmark = pytest.mark.lab

# Backend type -> (FLANNEL_MTU on a 1500 LAN, the route to a remote SUBNET of a host at ADDRESS).
EXPECTED = {
    "host-gw": (1500, "{subnet} via {address} dev eth0"),
    "vxlan": (1450, "{subnet} via {zero} dev flannel.1 onlink"),
}


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(check, timeout, what, every=0.1)


def _routes(host: LightHost) -> str:
    return host.run(["ip", "-4", "route", "show"]).stdout


@pytest.mark.parametrize("backend", sorted(EXPECTED))
def test_three_agents_route_every_subnet(light_lab: LightLab, backend: str) -> None:
    if not ETCD_BIN:
        pytest.skip("no etcd binary")
    mtu, route = EXPECTED[backend]
    store = light_lab.add_host("etcd")
    hosts = [light_lab.add_host(f"h{i}") for i in range(1, 4)]
    procs: list[subprocess.Popen] = []
    try:
        url = start_etcd(store, procs, backend)
        for host in hosts:
            start_agent(host, url, procs)
        subnets = {}
        for host in hosts:
            env_file = host.base / "subnet.env"
            text = _wait(
                lambda f=env_file: f.exists() and f.read_text(),
                20,
                f"{host.name} subnet.env ({(host.base / 'agent.log').read_text()[-800:]})",
            )
            found = re.search(
                rf"FLANNEL_SUBNET=10\.6\.(\d+)\.1/24\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n",
                text,
            )
            assert found, text
            subnets[host.name] = f"10.6.{found.group(1)}.0/24"
        assert len(set(subnets.values())) == 3
        for host in hosts:
            wanted = [
                route.format(subnet=subnets[o.name], address=o.address, zero=subnets[o.name][:-3])
                for o in hosts
                if o is not host
            ]
            _wait(
                lambda h=host, w=wanted: all(line in _routes(h) for line in w),
                15,
                f"routes on {host.name}: {wanted}",
            )
            assert subnets[host.name] not in _routes(host)
            # flannel's chains, inside the host's own network namespace.
            fwd = host.run(["iptables", "-S", "FLANNEL-FWD"]).stdout
            assert "-s 10.6.0.0/16" in fwd and "-d 10.6.0.0/16" in fwd
            nat = host.run(["iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG"]).stdout
            assert "MASQUERADE" in nat and subnets[host.name] in nat
            # The peers-only chain: vxlan lets 8472/udp in from the two peers only; host-gw
            # has no tunnel to guard.
            want = [f"-A OVERLAY-PEERS -s {o.address}/32 -j RETURN" for o in hosts if o is not host]
            if backend == "vxlan":
                _wait(
                    lambda h=host, w=want: all(x in h.run(["iptables", "-S"]).stdout for x in w),
                    10,
                    f"OVERLAY-PEERS on {host.name}",
                )
            else:
                assert "OVERLAY-PEERS" not in host.run(["iptables", "-S"]).stdout
    finally:
        light_lab.close()  # kills every process of every host (their PID 1)
        for proc in procs:
            proc.wait(timeout=10)
