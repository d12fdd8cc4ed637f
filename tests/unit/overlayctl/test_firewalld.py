"""firewalld on RHEL hosts: rendered definitions, facts, plan actions, apply and reset.

The facts and reset scripts run here for real under sh, with fake `systemctl` and `firewall-cmd`
programs that print firewalld's output formats and record what they were asked to do.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overlayctl import paths as hp
from overlayctl.inventory import load_inventory, parse_inventory
from overlayctl.phases.facts import FACTS as FACTS_SCRIPT
from overlayctl.phases.planner import plan_host
from overlayctl.phases.prepare import FIREWALLD_RESET, Prepare
from overlayctl.plan.changes import Action, DesiredFile, HostPlan
from overlayctl.plan.facts import Firewalld, RemoteFile, parse_facts
from overlayctl.plan.render import render_hosts
from overlayctl.remote.ssh import RunResult

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
ETCD_SVC = hp.firewalld_service(hp.FIREWALLD_ETCD)
NODE_SVC = hp.firewalld_service(hp.FIREWALLD_NODE)
ZONE = hp.firewalld_zone(hp.FIREWALLD_ZONE)

ACTIVE_ZONES = (
    "docker\n  interfaces: docker0\npublic (default)\n  interfaces: eth0\n"
    "internal\n  interfaces: eth1\n"
)
# `firewall-cmd --permanent --list-all-zones`, cut short; empty lists end in a space.
ALL_ZONES = (
    "block\n  target: %%REJECT%%\n  interfaces: \n  services: \n"
    "internal\n  target: default\n"
    "  services: cockpit dhcpv6-client mdns samba-client ssh overlayctl-etcd\n"
    "public (default)\n  target: default\n  services: cockpit dhcpv6-client ssh\n"
)


# --- what is rendered ---------------------------------------------------------------------------


def services(content: bytes) -> list[tuple[str, str]]:
    root = ET.fromstring(content)  # noqa: S314 - our own rendered file
    return [(p.get("protocol", ""), p.get("port", "")) for p in root.iter("port")]


def test_rhel_files_follow_the_roles_and_the_backend() -> None:
    files = render_hosts(load_inventory(GOLDEN / "rhel-tls" / "cluster.yaml")[0])
    firewall = {
        h: sorted(p for p in f if p.startswith("/etc/firewalld/")) for h, f in files.items()
    }
    assert firewall == {
        "node1": [ETCD_SVC, NODE_SVC, ZONE],
        "node2": [ETCD_SVC, NODE_SVC, ZONE],
        "node3": [ETCD_SVC],  # etcd only: no overlay traffic
        "node4": [NODE_SVC, ZONE],
    }
    assert services(files["node1"][ETCD_SVC].content) == [("tcp", "2379-2380"), ("tcp", "4001")]
    assert services(files["node4"][NODE_SVC].content) == [("udp", "8286")]  # the udp port set
    zone = ET.fromstring(files["node4"][ZONE].content)  # noqa: S314
    assert zone.get("target") == "ACCEPT"
    assert [s.get("address") for s in zone.iter("source")] == ["172.21.0.0/16"]
    # no rule for the agent's health port: it listens on 127.0.0.1 only
    assert (
        str(hp.AGENT_HEALTHZ_PORT)
        not in b"".join(files["node1"][p].content for p in firewall["node1"]).decode()
    )


@pytest.mark.parametrize(
    ("backend", "ports"),
    [("vxlan", [("udp", "8472")]), ("udp", [("udp", "8285")]), ("host-gw", [])],
)
def test_node_service_by_backend(backend: str, ports: list[tuple[str, str]]) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "c--d", "network": "172.30.0.0/16", "backend": backend, "os": "rhel"},
        "hosts": [
            {"name": "a", "address": "10.0.0.1"},
            {"name": "b", "address": "10.0.0.2", "os": "debian"},
        ],
    }
    files = render_hosts(parse_inventory(data, base_dir=Path("/x"))[0])
    assert services(files["a"][NODE_SVC].content) == ports
    assert b"c- -d" in files["a"][NODE_SVC].content  # "--" cannot be in an XML comment
    assert not any(p.startswith("/etc/firewalld/") for p in files["b"])  # Debian: none


# --- facts --------------------------------------------------------------------------------------


def fake_bin(tmp_path: Path, firewalld_state: str) -> Path:
    """systemctl and firewall-cmd stand-ins; firewall-cmd appends its arguments to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "active-zones").write_text(ACTIVE_ZONES)
    (tmp_path / "all-zones").write_text(ALL_ZONES)
    scripts = {
        "systemctl": f'[ "$1 $2" = "is-active firewalld" ] && {{ echo {firewalld_state}; exit 0; }}'
        "\necho unknown\n",
        "firewall-cmd": f"""echo "$*" >> {tmp_path}/calls.log
case "$*" in
  --get-default-zone) echo public ;;
  --get-active-zones) cat {tmp_path}/active-zones ;;
  *--list-all-zones) cat {tmp_path}/all-zones ;;
esac
""",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_sh(script: str, bin_dir: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", "-c", script, "sh", *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


NO_FILES = ("/nonexistent", "/nonexistent")  # the agent's digest file, docker's drop-in


def test_facts_report_firewalld_zones_and_services(tmp_path: Path) -> None:
    found = parse_facts(run_sh(FACTS_SCRIPT.text, fake_bin(tmp_path, "active"), *NO_FILES))
    assert found.firewalld == Firewalld(
        "public",
        {"docker0": "docker", "eth0": "public", "eth1": "internal"},
        {
            "internal": frozenset(
                {"cockpit", "dhcpv6-client", "mdns", "samba-client", "ssh", "overlayctl-etcd"}
            ),
            "public": frozenset({"cockpit", "dhcpv6-client", "ssh"}),
        },
    )
    assert (
        found.firewalld.zone_of("eth1") == "internal"
        and found.firewalld.zone_of("eth9") == "public"
    )
    assert found.units["firewalld"].active == "active"


def test_facts_without_active_firewalld(tmp_path: Path) -> None:
    found = parse_facts(run_sh(FACTS_SCRIPT.text, fake_bin(tmp_path, "inactive"), *NO_FILES))
    assert found.firewalld is None
    assert not (tmp_path / "calls.log").exists()


# --- plan ---------------------------------------------------------------------------------------

FACTS = """os_id=rocky
os_like=rhel centos fedora
hostname=node1
pkg_manager=dnf
ip_forward=1
systemd=yes
addr=eth0 10.0.2.15/24
addr=eth1 192.168.255.154/24
"""


def rhel_host_files() -> tuple[Any, dict[str, DesiredFile]]:
    inv = load_inventory(GOLDEN / "rhel-tls" / "cluster.yaml")[0]
    rendered = render_hosts(inv)["node1"]
    return inv.hosts[0], {p: DesiredFile(f.content, f.mode, f.owner) for p, f in rendered.items()}


def as_current(desired: dict[str, DesiredFile]) -> dict[str, RemoteFile]:
    return {p: RemoteFile(p, f.content, f.mode, "root:root") for p, f in desired.items()}


def prepare_actions(plan: HostPlan) -> list[str]:
    return [str(a) for a in plan.in_phase("prepare")[1]]


def test_plan_opens_the_ports_in_the_underlay_interfaces_zone() -> None:
    host, desired = rhel_host_files()
    fw = Firewalld("public", {"eth1": "internal"}, {"internal": frozenset({"ssh"})})
    facts = dataclasses.replace(parse_facts(FACTS), firewalld=fw)
    fresh = plan_host(host, "rhel", desired, {}, facts, restart_network=True)
    assert [
        f.path for f in fresh.in_phase("prepare")[0] if f.path.startswith("/etc/firewalld")
    ] == [ETCD_SVC, NODE_SVC, ZONE]
    assert prepare_actions(fresh) == [
        "reload firewalld",
        "add-service overlayctl-etcd zone=internal",
        "add-service overlayctl-node zone=internal",
    ]  # and no restart-network: firewalld files are not the static-IP file
    # a re-run: files in place, services enabled -> nothing
    done = Firewalld(
        "public",
        {"eth1": "internal"},
        {"internal": frozenset({"overlayctl-etcd", "overlayctl-node"})},
    )
    again = plan_host(
        host, "rhel", desired, as_current(desired), dataclasses.replace(facts, firewalld=done)
    )
    assert prepare_actions(again) == [] and not again.in_phase("prepare")[0]
    # a changed port (e.g. another backend): the file is rewritten and firewalld reloaded
    current = as_current(desired)
    current[NODE_SVC] = RemoteFile(NODE_SVC, b"<service/>\n", 0o644, "root:root")
    changed = plan_host(host, "rhel", desired, current, dataclasses.replace(facts, firewalld=done))
    assert prepare_actions(changed) == ["reload firewalld"]


def test_plan_without_firewalld_writes_no_firewalld_files() -> None:
    host, desired = rhel_host_files()
    plan = plan_host(host, "rhel", desired, {}, parse_facts(FACTS))
    assert not [f for f in plan.files if f.path.startswith("/etc/firewalld/")]
    assert not [a for a in plan.actions if a.kind in ("reload", "add-service")]


def test_rhel_packages() -> None:
    host, desired = rhel_host_files()
    plan = plan_host(host, "rhel", desired, {}, parse_facts(FACTS))
    install = next(a for a in plan.actions if a.kind == "install")
    assert install.target == "iptables iproute iputils etcd python3 docker-ce"


# --- apply and reset ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def run(self, argv: list[str], **_kw: Any) -> RunResult:
        self.argvs.append(argv)
        return RunResult(0, "", "")


def test_apply_adds_the_service_permanently_and_at_once() -> None:
    remote = Recorder()
    on = SimpleNamespace(remote=remote, family="rhel")  # the host Prepare acts on
    Prepare().act(on, Action("prepare", "reload", "firewalld"))  # type: ignore[arg-type]
    Prepare().act(on, Action("prepare", "add-service", "overlayctl-etcd zone=internal"))  # type: ignore[arg-type]
    assert remote.argvs == [
        ["firewall-cmd", "--reload"],
        ["firewall-cmd", "--permanent", "--zone=internal", "--add-service=overlayctl-etcd"],
        ["firewall-cmd", "--zone=internal", "--add-service=overlayctl-etcd"],
    ]


def test_reset_takes_the_services_out_of_every_zone_before_removing_them(tmp_path: Path) -> None:
    bin_dir = fake_bin(tmp_path, "active")
    (tmp_path / "all-zones").write_text(ALL_ZONES.replace("ssh\n", "ssh overlayctl-node\n", 1))
    fw_dir = tmp_path / "firewalld"
    for path in (ETCD_SVC, NODE_SVC, ZONE, "/etc/firewalld/services/other.xml"):
        target = fw_dir / path.removeprefix("/etc/firewalld/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
    run_sh(FIREWALLD_RESET.text, bin_dir, str(fw_dir))
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        "--permanent --list-all-zones",
        "--permanent --zone=internal --remove-service=overlayctl-etcd",
        "--permanent --zone=public --remove-service=overlayctl-node",
        "--reload",
    ]
    assert sorted(str(p.relative_to(fw_dir)) for p in fw_dir.rglob("*.xml")) == [
        "services/other.xml"
    ]
    # an etcd-only host: one service file, no zone file
    (fw_dir / "services" / "overlayctl-etcd.xml").write_text("x")
    run_sh(FIREWALLD_RESET.text, bin_dir, str(fw_dir))
    assert not (fw_dir / "services" / "overlayctl-etcd.xml").exists()
    assert (tmp_path / "calls.log").read_text().splitlines()[-1] == "--reload"
    # nothing of ours left: nothing is done at all
    (tmp_path / "calls.log").unlink()
    run_sh(FIREWALLD_RESET.text, bin_dir, str(fw_dir))
    assert not (tmp_path / "calls.log").exists()
