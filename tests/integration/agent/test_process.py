"""The real ``overlay-agent`` process with the real vxlan backend, in light lab hosts.

Each agent runs inside a light lab host (tests/conftest.py's ``light_lab``) on the host's eth0
and programs ``flannel.1`` there for real; what it programmed is read back with ``ip`` and
``bridge`` in that host's namespace. etcd stays on the machine's 127.0.0.1 (conftest.py's
EtcdServer, shared by the module): a loopback relay makes it the host's 127.0.0.1:2379, and
another brings the agent's /healthz (the host's 127.0.0.1:8471) to a port on the machine's
127.0.0.1. Nothing is sent anywhere else: the hosts' LAN is the lab's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.etcd import EtcdClient
from overlayctl.lab.light import LightHost, LightLab
from tests.integration.conftest import EtcdServer, LoopbackRelay
from tests.polling import wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[3]
AGENT = Path(sys.executable).parent / "overlay-agent"
CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'
DEVICE = "flannel.1"
ETCD_IN_HOST = "http://127.0.0.1:2379"  # the relay to the machine's etcd, inside each host
HEALTHZ_PORT = 8471  # the agent's /healthz inside its host


# -- hosts and what the kernel holds in them ------------------------------------------------------


class AgentHost:
    """A light host for agents, with the two loopback relays (etcd in, /healthz out)."""

    def __init__(self, lab: LightLab, name: str, server: EtcdServer) -> None:
        self.host: LightHost = lab.add_host(name)
        self.etcd_relay = LoopbackRelay(
            server.client_port, listen_ns=self.host.netns, listen_port=2379
        )
        self.health_relay = LoopbackRelay(HEALTHZ_PORT, connect_ns=self.host.netns)

    def close(self) -> None:
        self.etcd_relay.close()
        self.health_relay.close()


def _json(host: LightHost, tool: str, *args: str) -> Any:
    """``ip``/``bridge`` -j ARGS in HOST's network namespace (None if the device is missing)."""
    argv = [tool, "-n", host.netns, "-j", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "Cannot find device" in proc.stderr:
            return None
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "[]")


def vxlan_device(host: LightHost) -> dict[str, Any] | None:
    """flannel.1 in HOST as the kernel has it (None: there is none)."""
    links = _json(host, "ip", "-d", "link", "show", DEVICE)
    if not links:
        return None
    link, data = links[0], links[0]["linkinfo"]["info_data"]
    addrs = _json(host, "ip", "-4", "addr", "show", "dev", DEVICE) or []
    return {
        "ifindex": link["ifindex"],
        "mac": link["address"],
        "mtu": link["mtu"],
        "up": "UP" in link["flags"],
        "vni": data["id"],
        "local": data["local"],
        "port": data["port"],
        "learning": data["learning"],
        "addresses": [f"{a['local']}/{a['prefixlen']}" for x in addrs for a in x["addr_info"]],
    }


def dataplane(host: LightHost) -> dict[str, Any]:
    """flannel.1 and every route, neighbour and fdb entry on it, for before/after checks."""
    return {
        "device": vxlan_device(host),
        "routes": _json(host, "ip", "-4", "route", "show", "dev", DEVICE),
        "neighbours": _json(host, "ip", "-4", "neigh", "show", "dev", DEVICE),
        "fdb": _json(host, "bridge", "fdb", "show", "dev", DEVICE),
    }


def routed_peers(host: LightHost) -> dict[str, str]:
    """{remote subnet: PublicIP} that HOST's flannel.1 carries traffic to, from the kernel.

    A peer counts when all three of flannel's entries agree: the route ``<subnet> via
    <subnet>.0 onlink``, a permanent neighbour ``<subnet>.0 -> MAC`` and an fdb entry ``MAC ->
    PublicIP``. A route missing either of the others, and any neighbour or fdb entry no route
    uses, is an entry of its own ("incomplete ..."/"stray ..."), so comparing with == fails.
    """
    state = dataplane(host)
    neighbours = {n["dst"]: n for n in state["neighbours"] or []}
    fdb = {f["mac"]: f for f in state["fdb"] or []}
    found: dict[str, str] = {}
    for route in state["routes"] or []:
        dst, gateway = route["dst"], route.get("gateway")
        neigh = neighbours.pop(gateway, None) if gateway else None
        entry = fdb.pop(neigh["lladdr"], None) if neigh else None
        complete = (
            gateway == dst.split("/")[0]
            and "onlink" in route.get("flags", [])
            and neigh is not None
            and "PERMANENT" in neigh["state"]
            and entry is not None
        )
        found[dst] = entry["dst"] if complete and entry else f"incomplete {route} {neigh} {entry}"
    found.update({f"stray neighbour {ip}": str(n) for ip, n in neighbours.items()})
    found.update({f"stray fdb {mac}": str(f) for mac, f in fdb.items()})
    return found


def vxlan_lease(public_ip: str, mac: str) -> str:
    """A peer's lease value as a vxlan agent writes it."""
    data = {"VNI": 1, "VtepMAC": mac}
    return json.dumps({"PublicIP": public_ip, "BackendType": "vxlan", "BackendData": data})


# -- helpers ------------------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class AgentProc:
    """One overlay-agent process in NODE's host, with its own files and notify socket (in the
    host's folder, which the machine and the host share); /healthz through NODE's relay."""

    def __init__(self, node: AgentHost, prefix: str, *extra: str, name: str = "agent") -> None:
        self.node = node
        self.host = node.host
        self.address = node.host.address
        workdir = node.host.base / name  # not under a folder the host overlays
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = node.health_relay.port
        self.subnet_file = workdir / "subnet.env"
        self.docker_file = workdir / "docker"
        self.log_file = workdir / "agent.log"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / "notify.sock"))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.argv = [
            str(AGENT),
            f"--etcd-prefix={prefix}",
            "--iface=eth0",
            f"--subnet-file={self.subnet_file}",
            f"--docker-opts-file={self.docker_file}",
            f"--healthz-port={HEALTHZ_PORT}",
            "--config-poll-interval=0.3",
            "--subnet-lease-ttl=60s",
            "--subnet-lease-renew-margin=0",
            "--no-iptables-forward-rules",  # FLANNEL-FWD: test_process_lab.py
            *extra,
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FLANNELD_ETCD_ENDPOINTS": ETCD_IN_HOST,
            "NOTIFY_SOCKET": str(workdir / "notify.sock"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the agent's, as the machine numbers it (under nsenter)

    def start(self) -> AgentProc:
        with self.log_file.open("ab") as log:
            self.proc = self.host.popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        self.pid = int(
            wait_for(lambda: children.read_text().split(), 5, "the agent under nsenter")[0]
        )
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def ready(self) -> bool:
        return http_get(self.port, "/readyz")[0] == 200

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(self.ready, timeout, f"agent ready (log: {self.log()[-1500:]})")

    def read_notify(self) -> list[str]:
        for _ in range(50):
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                break
        return self.messages

    def metric(self, name: str) -> float | None:
        _, text = http_get(self.port, "/metrics")
        found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM the agent by PID; the seconds it took to exit (nsenter passes its status)."""
        assert self.proc is not None and self.pid is not None
        started = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.notify.close()


@pytest.fixture
def agents(
    light_lab: LightLab, etcd_server: EtcdServer, prefix: str
) -> Iterator[Callable[..., AgentProc]]:
    """make(NAME, *FLAGS, host=NAME): an agent in light host HOST (made on first use)."""
    nodes: dict[str, AgentHost] = {}
    made: list[AgentProc] = []

    def make(name: str, *extra: str, host: str | None = None) -> AgentProc:
        host = host or name
        if host not in nodes:
            nodes[host] = AgentHost(light_lab, host, etcd_server)
        agent = AgentProc(nodes[host], prefix, *extra, name=name)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.kill()
    for node in nodes.values():
        node.close()


def lease_keys(etcd: EtcdClient, prefix: str) -> dict[str, dict[str, Any]]:
    kvs, _ = etcd.get_prefix(prefix + "/subnets/")
    return {kv.key.rsplit("/", 1)[-1]: json.loads(kv.value) for kv in kvs}


# -- tests ----------------------------------------------------------------------------------------


def test_waits_for_config_then_ready_with_flannel_files(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str
) -> None:
    agent = agents("a", "--public-ip=10.99.0.1").start()  # a PublicIP not on eth0, as behind NAT
    wanted = f"key {prefix}/config not found at {ETCD_IN_HOST}"
    wait_for(lambda: wanted in agent.log(), what="the missing-key log line")
    code, body = http_get(agent.port, "/readyz")
    assert code == 503
    reason = json.loads(body)
    assert reason["phase"] == "waiting-for-config" and "lease" in reason["waiting_for"]
    assert http_get(agent.port, "/healthz")[0] == 200
    assert vxlan_device(agent.host) is None  # no data plane before the config

    etcd.put(prefix + "/config", CONFIG)
    agent.wait_ready()
    env = agent.subnet_file.read_text()
    found = re.fullmatch(
        r"FLANNEL_NETWORK=10\.5\.0\.0/16\nFLANNEL_SUBNET=10\.5\.(\d+)\.1/24\n"
        r"FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        env,
    )
    assert found, env
    third = found.group(1)
    assert agent.docker_file.read_text() == (
        f'DOCKER_OPT_BIP="--bip=10.5.{third}.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
        'DOCKER_OPT_MTU="--mtu=1450"\n'
        f'DOCKER_NETWORK_OPTIONS=" --bip=10.5.{third}.1/24 --ip-masq=true --mtu=1450"\n'
    )
    # The kernel's flannel.1: flannel's parameters on eth0's address, the lease's .0 on it.
    device = vxlan_device(agent.host)
    assert device is not None
    assert {k: v for k, v in device.items() if k not in ("ifindex", "mac")} == {
        "mtu": 1450,
        "up": True,
        "vni": 1,
        "local": agent.address,
        "port": 8472,
        "learning": False,
        "addresses": [f"10.5.{third}.0/32"],
    }
    lease = lease_keys(etcd, prefix)[f"10.5.{third}.0-24"]
    assert lease["PublicIP"] == "10.99.0.1" and lease["BackendType"] == "vxlan"
    assert lease["BackendData"] == {"VNI": 1, "VtepMAC": device["mac"]}
    assert "READY=1" in "\n".join(agent.read_notify())
    assert 0 < (agent.metric("overlay_agent_lease_seconds_left") or 0) <= 60
    # The backend's own counters reach /metrics.
    assert agent.metric("overlay_agent_routes_programmed") == 0
    assert agent.metric("overlay_agent_backend_peers") == 0
    assert agent.metric("overlay_agent_backend_peers_refused") == 0
    # Every log line is one logfmt event.
    assert all(line.startswith("ts=") for line in agent.log().splitlines())

    assert agent.terminate() < 5
    assert agent.proc is not None and agent.proc.returncode == 0
    assert "STOPPING=1" in "\n".join(agent.read_notify())
    assert f"10.5.{third}.0-24" in lease_keys(etcd, prefix)  # the lease stays
    assert vxlan_device(agent.host) == device  # and so does the data plane, untouched


def test_restart_keeps_the_subnet_and_cleanup_revokes(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str
) -> None:
    etcd.put(prefix + "/config", CONFIG)
    first = agents("a").start()
    first.wait_ready()
    subnet = first.subnet_file.read_text()
    device = vxlan_device(first.host)
    assert first.terminate() < 5
    # Same host and files, a new process that also cleans up on exit.
    again = agents("a2", "--cleanup-on-exit", host="a")
    again.subnet_file.write_text(subnet)
    again.start().wait_ready()
    assert again.subnet_file.read_text() == subnet
    assert len(lease_keys(etcd, prefix)) == 1
    assert vxlan_device(again.host) == device  # adopted: same device, same VtepMAC
    assert again.terminate() < 5
    assert lease_keys(etcd, prefix) == {}
    assert vxlan_device(again.host) is None  # the data plane was removed
    assert dataplane(again.host)["routes"] is None


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_peers_followed_and_deleted_lease_reacquired(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str, transport: str
) -> None:
    """Leases, both watches and the re-acquire, once per etcd transport of the agent; across the
    re-acquire the data plane stays as it was, read from the kernel on both hosts."""
    etcd.put(prefix + "/config", CONFIG)
    a = agents("a", f"--etcd-transport={transport}").start()
    b = agents("b", f"--etcd-transport={transport}").start()
    a.wait_ready()
    b.wait_ready()
    keys = lease_keys(etcd, prefix)
    a_key = next(k for k, v in keys.items() if v["PublicIP"] == a.address)
    a_subnet = a_key.replace("-", "/")
    b_subnet = next(k for k, v in keys.items() if v["PublicIP"] == b.address).replace("-", "/")
    wait_for(lambda: routed_peers(a.host) == {b_subnet: b.address}, what="a routes b")
    wait_for(lambda: routed_peers(b.host) == {a_subnet: a.address}, what="b routes a")
    assert a.metric("overlay_agent_peers") == 1
    assert a.metric("overlay_agent_routes_programmed") == 1
    before = {"a": dataplane(a.host), "b": dataplane(b.host)}

    etcd.delete(prefix + "/subnets/" + a_key)  # by hand, like an operator's mistake
    wait_for(lambda: a_key in lease_keys(etcd, prefix), timeout=10, what="lease re-acquired")
    wait_for(lambda: (a.metric("overlay_agent_lease_reacquired_total") or 0) >= 1, what="metric")
    wait_for(a.ready, what="ready again")
    # a kept its data plane: the same device (ifindex, VtepMAC, address) and entries, and it
    # never programmed it again (the agent says so when it does: event=subnet-changed).
    assert dataplane(a.host) == before["a"]
    assert "event=lease-reacquired" in a.log()
    assert "event=subnet-changed" not in a.log()
    assert "event=setup-failed" not in a.log()
    # b saw a's lease go and come back: it routes a again exactly as before.
    wait_for(lambda: dataplane(b.host) == before["b"], what="b routes a again, as before")


def test_self_check_reports_a_duplicate_public_ip(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str
) -> None:
    etcd.put(prefix + "/config", CONFIG)
    a = agents("a", "--conflict-check-interval=0.3s").start()
    a.wait_ready()
    lease_id, _ = etcd.lease_grant(60)
    value = vxlan_lease(a.address, "0a:00:00:00:00:05")
    etcd.put(prefix + "/subnets/10.5.254.0-24", value, lease_id)  # a second host, same IP
    name = 'overlay_agent_lease_conflicts{kind="duplicate-public-ip"}'
    wait_for(lambda: a.metric(name) == 1, what="conflict metric")
    assert f"PublicIP {a.address} holds 2 subnets" in a.log()
    assert routed_peers(a.host) == {}  # a lease with our own PublicIP is never a peer
    etcd.lease_revoke(lease_id)
    wait_for(lambda: a.metric(name) == 0, what="conflict cleared")


def test_sigterm_while_waiting_for_config_and_watchdog(agents: Callable[..., AgentProc]) -> None:
    agent = agents("a")
    agent.env["WATCHDOG_USEC"] = "400000"  # systemd's WatchdogSec=0.4s: a ping every 0.2 s
    agent.start()
    wait_for(lambda: "not found at" in agent.log(), what="waiting for the config")
    wait_for(lambda: agent.read_notify().count("WATCHDOG=1") >= 2, what="watchdog pings")
    assert any(m.startswith("STATUS=waiting-for-config: ") for m in agent.messages)
    assert agent.terminate() < 5
    assert agent.proc is not None and agent.proc.returncode == 0


def test_bad_option_is_one_line_and_status_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(AGENT), "--healthz-port=http"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--healthz-port" in proc.stderr
    assert "Traceback" not in proc.stderr
