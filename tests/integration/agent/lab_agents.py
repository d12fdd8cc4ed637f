"""Real overlay-agents against a real etcd on light lab hosts: the helpers the lab modules share.

etcd runs inside one light host and the agents reach it over the lab LAN; everything (etcd,
agents, routes, iptables) lives in the lab's namespaces and dies with the lab.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from overlayctl.lab.light import LightHost
from tests.integration.conftest import ETCD_BIN
from tests.polling import wait_for

VENV_BIN = Path(sys.executable).parent
PREFIX = "/coreos.com/network"


def etcdctl(host: LightHost, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl ARGS inside HOST against URL (check=False: the caller looks at the result)."""
    return host.run(["etcdctl", f"--endpoints={url}", "--dial-timeout=1s", *args], check=False)


def start_etcd(host: LightHost, procs: list[subprocess.Popen], backend: str, *extra: str) -> str:
    """etcd inside HOST with ``<prefix>/config`` (10.6.0.0/16, BACKEND) and the EXTRA flags
    (e.g. --enable-v2); its client URL."""
    url = f"http://{host.address}:2379"
    peer = f"http://{host.address}:2380"
    log = (host.base / "etcd.log").open("wb")
    procs.append(
        host.popen(
            [
                str(ETCD_BIN),
                "--name=e",
                f"--data-dir={host.base / 'etcd-data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=e={peer}",
                "--log-level=error",
                *extra,
            ],
            stdout=log,
            stderr=log,
        )
    )
    log.close()
    config = json.dumps({"Network": "10.6.0.0/16", "Backend": {"Type": backend}})
    wait_for(
        lambda: etcdctl(host, url, "put", f"{PREFIX}/config", config).returncode == 0,
        20,
        "etcd inside the lab answers",
        every=0.1,
    )
    return url


def start_agent(
    host: LightHost, url: str, procs: list[subprocess.Popen], *extra: str
) -> subprocess.Popen:
    """overlay-agent inside HOST (eth0, ip-masq, files under the host's base), logging to
    ``agent.log`` there."""
    log = (host.base / "agent.log").open("wb")
    proc = host.popen(
        [
            str(VENV_BIN / "overlay-agent"),
            f"--etcd-endpoints={url}",
            "--iface=eth0",
            "--ip-masq",
            f"--subnet-file={host.base / 'subnet.env'}",
            f"--docker-opts-file={host.base / 'docker'}",
            "--logtostderr=false",
            "--log_dir=/var/log/",
            *extra,
        ],
        stdout=log,
        stderr=log,
    )
    log.close()
    procs.append(proc)
    return proc


def agent_log(host: LightHost) -> str:
    path = host.base / "agent.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_subnet(host: LightHost) -> str:
    """The subnet HOST's agent leased (from its subnet.env), e.g. ``10.6.31.0/24``."""
    env_file = host.base / "subnet.env"
    text = wait_for(
        lambda: env_file.exists() and env_file.read_text(),
        20,
        f"{host.name} subnet.env ({agent_log(host)[-800:]})",
    )
    line = next(x for x in text.splitlines() if x.startswith("FLANNEL_SUBNET="))
    third = line.split("=", 1)[1].split(".")[2]
    return f"10.6.{third}.0/24"
