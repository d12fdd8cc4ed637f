"""The real ``overlay-agent`` process against a real etcd on 127.0.0.1, with a fake backend.

The fake backend and interface below are loaded by the agent through its test-only hooks
(OVERLAY_AGENT_TEST_BACKEND / OVERLAY_AGENT_TEST_IFACE); they touch no network and record
what the agent asked of them in a JSON file, so these tests only talk to 127.0.0.1.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.backends.base import Backend, ExternalInterface
from agent.etcd import EtcdClient
from agent.subnets import Lease
from tests.integration.conftest import EtcdServer, free_port
from tests.polling import wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(sys.executable).parent / "overlay-agent"
STATE_ENV = "OVERLAY_AGENT_FAKE_STATE"
CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}'


# -- what the agent process loads through its test hooks ----------------------------------------


def fake_interface(
    ifaces: Sequence[str] = (), regexes: Sequence[str] = (), public_ip: str | None = None
) -> ExternalInterface:
    """Loopback, with the PublicIP the test gave (only written into etcd, never used)."""
    lo = IPv4Address("127.0.0.1")
    return ExternalInterface("lo", 1, lo, IPv4Address(public_ip) if public_ip else lo, 1500)


class FakeBackend(Backend):
    """Records setup, teardown and peers in $OVERLAY_AGENT_FAKE_STATE."""

    type_name = "udp"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.state: dict[str, Any] = {"setup": [], "peers": {}, "teardown": 0}

    @property
    def mtu(self) -> int:
        return self.iface.mtu - 28

    def _save(self) -> None:
        path = Path(os.environ[STATE_ENV])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(path)

    def setup(self, own: Lease) -> None:
        self.state["setup"].append(str(own.subnet))
        self._save()

    def teardown(self) -> None:
        self.state["teardown"] += 1
        self._save()

    def add_peer(self, lease: Lease) -> None:
        self.state["peers"][str(lease.subnet)] = str(lease.public_ip)
        self._save()

    def remove_peer(self, lease: Lease) -> None:
        self.state["peers"].pop(str(lease.subnet), None)
        self._save()

    def stats(self) -> dict[str, float]:
        return {"routes_programmed": len(self.state["peers"]), "tx_packets_total": 7}


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
    """One overlay-agent process with its own files, port and notify socket."""

    def __init__(self, workdir: Path, server: EtcdServer, prefix: str, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.subnet_file = workdir / "subnet.env"
        self.docker_file = workdir / "docker"
        self.state_file = workdir / "fake.json"
        self.log_file = workdir / "agent.log"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / "notify.sock"))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.argv = [
            str(AGENT),
            f"--etcd-prefix={prefix}",
            f"--subnet-file={self.subnet_file}",
            f"--docker-opts-file={self.docker_file}",
            f"--healthz-port={self.port}",
            "--config-poll-interval=0.3",
            "--subnet-lease-ttl=60s",
            "--subnet-lease-renew-margin=0",
            "--no-iptables-forward-rules",  # never touch the test machine's iptables
            *extra,
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FLANNELD_ETCD_ENDPOINTS": server.url,
            "NOTIFY_SOCKET": str(workdir / "notify.sock"),
            "OVERLAY_AGENT_TEST_BACKEND": f"{__name__}:FakeBackend",
            "OVERLAY_AGENT_TEST_IFACE": f"{__name__}:fake_interface",
            STATE_ENV: str(self.state_file),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
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

    def fake(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def metric(self, name: str) -> float | None:
        _, text = http_get(self.port, "/metrics")
        found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM by PID; the seconds it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.notify.close()


@pytest.fixture
def agents(tmp_path: Path, etcd_server: EtcdServer, prefix: str) -> Iterator[Callable[..., Any]]:
    made: list[AgentProc] = []

    def make(name: str, *extra: str) -> AgentProc:
        agent = AgentProc(tmp_path / name, etcd_server, prefix, *extra)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.kill()


def lease_keys(etcd: EtcdClient, prefix: str) -> dict[str, dict[str, Any]]:
    kvs, _ = etcd.get_prefix(prefix + "/subnets/")
    return {kv.key.rsplit("/", 1)[-1]: json.loads(kv.value) for kv in kvs}


# -- tests ----------------------------------------------------------------------------------------


def test_waits_for_config_then_ready_with_flannel_files(
    agents: Callable[..., AgentProc], etcd: EtcdClient, etcd_server: EtcdServer, prefix: str
) -> None:
    agent = agents("a", "--public-ip=10.99.0.1").start()
    wanted = f"key {prefix}/config not found at {etcd_server.url}"
    wait_for(lambda: wanted in agent.log(), what="the missing-key log line")
    code, body = http_get(agent.port, "/readyz")
    assert code == 503
    reason = json.loads(body)
    assert reason["phase"] == "waiting-for-config" and "lease" in reason["waiting_for"]
    assert http_get(agent.port, "/healthz")[0] == 200

    etcd.put(prefix + "/config", CONFIG)
    agent.wait_ready()
    env = agent.subnet_file.read_text()
    found = re.fullmatch(
        r"FLANNEL_NETWORK=10\.5\.0\.0/16\nFLANNEL_SUBNET=10\.5\.(\d+)\.1/24\n"
        r"FLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        env,
    )
    assert found, env
    third = found.group(1)
    assert agent.docker_file.read_text() == (
        f'DOCKER_OPT_BIP="--bip=10.5.{third}.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
        'DOCKER_OPT_MTU="--mtu=1472"\n'
        f'DOCKER_NETWORK_OPTIONS=" --bip=10.5.{third}.1/24 --ip-masq=true --mtu=1472"\n'
    )
    assert lease_keys(etcd, prefix)[f"10.5.{third}.0-24"]["PublicIP"] == "10.99.0.1"
    assert "READY=1" in "\n".join(agent.read_notify())
    assert 0 < (agent.metric("overlay_agent_lease_seconds_left") or 0) <= 60
    assert agent.metric("overlay_agent_routes_programmed") == 0
    assert agent.metric("overlay_agent_backend_tx_packets_total") == 7
    # Every log line is one logfmt event.
    assert all(line.startswith("ts=") for line in agent.log().splitlines())

    assert agent.terminate() < 5
    assert agent.proc is not None and agent.proc.returncode == 0
    assert "STOPPING=1" in "\n".join(agent.read_notify())
    assert f"10.5.{third}.0-24" in lease_keys(etcd, prefix)  # the lease stays
    assert agent.fake()["teardown"] == 0  # and so does the data plane


def test_restart_keeps_the_subnet_and_cleanup_revokes(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str
) -> None:
    etcd.put(prefix + "/config", CONFIG)
    first = agents("a", "--public-ip=10.99.0.2").start()
    first.wait_ready()
    subnet = first.subnet_file.read_text()
    assert first.terminate() < 5
    # Same files, a new process that also cleans up on exit.
    again = agents("a2", "--public-ip=10.99.0.2", "--cleanup-on-exit")
    again.subnet_file.write_text(subnet)
    again.start().wait_ready()
    assert again.subnet_file.read_text() == subnet
    assert len(lease_keys(etcd, prefix)) == 1
    assert again.terminate() < 5
    assert lease_keys(etcd, prefix) == {}
    assert again.fake()["teardown"] == 1


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_peers_followed_and_deleted_lease_reacquired(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str, transport: str
) -> None:
    """Leases, both watches and the re-acquire, once per etcd transport of the agent."""
    etcd.put(prefix + "/config", CONFIG)
    a = agents("a", "--public-ip=10.99.0.3", f"--etcd-transport={transport}").start()
    b = agents("b", "--public-ip=10.99.0.4", f"--etcd-transport={transport}").start()
    a.wait_ready()
    b.wait_ready()
    keys = lease_keys(etcd, prefix)
    a_key = next(k for k, v in keys.items() if v["PublicIP"] == "10.99.0.3")
    b_subnet = next(k for k, v in keys.items() if v["PublicIP"] == "10.99.0.4").replace("-", "/")
    wait_for(lambda: a.fake()["peers"] == {b_subnet: "10.99.0.4"}, what="a sees b")
    wait_for(lambda: len(b.fake()["peers"]) == 1, what="b sees a")
    assert a.metric("overlay_agent_peers") == 1

    etcd.delete(prefix + "/subnets/" + a_key)  # by hand, like an operator's mistake
    wait_for(lambda: a_key in lease_keys(etcd, prefix), timeout=10, what="lease re-acquired")
    wait_for(lambda: (a.metric("overlay_agent_lease_reacquired_total") or 0) >= 1, what="metric")
    wait_for(a.ready, what="ready again")
    assert a.fake()["setup"] == [a_key.replace("-", "/")]  # data plane never re-programmed
    wait_for(lambda: len(b.fake()["peers"]) == 1, what="b still routes a")


def test_self_check_reports_a_duplicate_public_ip(
    agents: Callable[..., AgentProc], etcd: EtcdClient, prefix: str
) -> None:
    etcd.put(prefix + "/config", CONFIG)
    a = agents("a", "--public-ip=10.99.0.5", "--conflict-check-interval=0.3s").start()
    a.wait_ready()
    lease_id, _ = etcd.lease_grant(60)
    value = json.dumps({"PublicIP": "10.99.0.5", "BackendType": "udp"})
    etcd.put(prefix + "/subnets/10.5.254.0-24", value, lease_id)  # a second host, same IP
    name = 'overlay_agent_lease_conflicts{kind="duplicate-public-ip"}'
    wait_for(lambda: a.metric(name) == 1, what="conflict metric")
    assert "PublicIP 10.99.0.5 holds 2 subnets" in a.log()
    etcd.lease_revoke(lease_id)
    wait_for(lambda: a.metric(name) == 0, what="conflict cleared")


def test_sigterm_while_waiting_for_config_and_watchdog(
    agents: Callable[..., AgentProc], etcd_server: EtcdServer, prefix: str
) -> None:
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
