"""The host firewall's firewalld half (RHEL family): rendered policies, facts, plan, apply, reset.

There is no RHEL userland on this machine (no firewalld, no dnf; the lab's hosts are Debian),
so firewalld itself cannot run here. What can be checked is checked for real: the policies'
XML is parsed and every rule's place asserted (who is accepted on which port, what is dropped,
that no zone of ours exists, let alone one with target ACCEPT), and the facts and reset scripts
run under sh with stand-in `systemctl`, `firewall-cmd` and `iptables` programs that print
firewalld's output formats and record what they were asked. The iptables half runs against
the kernel in tests/unit/overlayctl/test_host_firewall.py and on lab hosts in
tests/e2e/test_security_firewall.py.
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
from overlayctl.errors import OverlayctlError
from overlayctl.inventory import load_inventory, parse_inventory
from overlayctl.phases.facts import FACTS as FACTS_SCRIPT
from overlayctl.phases.firewall import FIREWALL_RESET, Firewall
from overlayctl.phases.planner import plan_host
from overlayctl.plan.changes import Action, DesiredFile, HostPlan
from overlayctl.plan.facts import Firewalld, RemoteFile, UnitState, parse_facts
from overlayctl.plan.render import render_hosts
from overlayctl.remote.ssh import RunResult

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HOST = hp.firewalld_policy(hp.FIREWALLD_HOST_POLICY)
FORWARD = hp.firewalld_policy(hp.FIREWALLD_FORWARD_POLICY)
MEMBERS = ["192.168.255.154", "192.168.255.155", "192.168.255.156"]  # rhel-tls: node1-3
ALL = [*MEMBERS, "192.168.255.157"]
NODES = ["192.168.255.154", "192.168.255.155", "192.168.255.157"]

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


def rules(content: bytes) -> list[tuple[int, str, str, str, str]]:
    """A policy's rich rules as (priority, source, destination, port/protocol, action)."""
    root = ET.fromstring(content)  # noqa: S314 - our own rendered file
    out = []
    for rule in root.iter("rule"):
        assert rule.get("family") == "ipv4"
        source, dest, port = rule.find("source"), rule.find("destination"), rule.find("port")
        (action,) = [c.tag for c in rule if c.tag in ("accept", "drop", "reject")]
        out.append((
            int(rule.get("priority", "0")),
            "" if source is None else source.get("address", ""),
            "" if dest is None else dest.get("address", ""),
            "" if port is None else f"{port.get('port')}/{port.get('protocol')}",
            action,
        ))  # fmt: skip
    return out


def accepted(content: bytes, port: str) -> list[str]:
    return [s for _, s, _, p, a in rules(content) if p == port and a == "accept"]


def rhel_files() -> dict[str, Any]:
    return render_hosts(load_inventory(GOLDEN / "rhel-tls" / "cluster.yaml")[0])


def test_policies_follow_the_roles_and_no_zone_is_ours() -> None:
    files = rhel_files()
    firewalld = {
        h: sorted(p for p in f if p.startswith("/etc/firewalld/")) for h, f in files.items()
    }
    assert firewalld == {
        "node1": [FORWARD, HOST],
        "node2": [FORWARD, HOST],
        "node3": [HOST],  # etcd only: no containers, nothing to forward
        "node4": [FORWARD, HOST],
    }
    for name in files:
        for path in firewalld[name]:
            root = ET.fromstring(files[name][path].content)  # noqa: S314
            assert root.tag == "policy" and root.get("target") == "CONTINUE"
            assert int(root.get("priority", "0")) < 0  # before every zone, docker's ACCEPT one too
            assert not list(root.iter("zone")) and not list(root.iter("service"))


def test_the_host_policy_accepts_each_port_from_its_sources_only_then_drops_it() -> None:
    files = rhel_files()
    node1 = files["node1"][HOST].content
    root = ET.fromstring(node1)  # noqa: S314
    assert [z.get("name") for z in root.iter("ingress-zone")] == ["ANY"]
    assert [z.get("name") for z in root.iter("egress-zone")] == ["HOST"]
    assert accepted(node1, "2379/tcp") == ["127.0.0.1", *ALL]  # clients: every cluster host
    assert accepted(node1, "4001/tcp") == ["127.0.0.1", *ALL]  # legacy_client_port
    assert accepted(node1, "2380/tcp") == MEMBERS  # peers: members only
    assert accepted(node1, "8286/udp") == NODES  # the udp backend's port: node hosts
    drops = [(prio, p) for prio, s, d, p, a in rules(node1) if a == "drop"]
    assert drops == [(-10, "2379/tcp"), (-10, "4001/tcp"), (-10, "2380/tcp"), (-10, "8286/udp")]
    # a lower priority comes first: every accept before every drop
    assert max(prio for prio, *_, a in rules(node1) if a == "accept") < -10
    assert accepted(files["node4"][HOST].content, "2379/tcp") == []  # no etcd on node4
    assert accepted(files["node3"][HOST].content, "8286/udp") == []  # no agent on node3
    # no rule for the agent's health port: it listens on 127.0.0.1 only
    assert str(hp.AGENT_HEALTHZ_PORT) not in node1.decode()


def test_the_forward_policy_accepts_overlay_to_overlay_and_never_a_members_etcd() -> None:
    forward = rhel_files()["node4"][FORWARD].content
    root = ET.fromstring(forward)  # noqa: S314
    assert [z.get("name") for z in root.iter("ingress-zone")] == ["ANY"]
    assert [z.get("name") for z in root.iter("egress-zone")] == ["ANY"]
    net = "172.21.0.0/16"
    assert rules(forward) == [
        *[(-10, net, m, f"{port}/tcp", "drop") for m in MEMBERS for port in (2379, 4001, 2380)],
        (-5, net, net, "", "accept"),
    ]


@pytest.mark.parametrize(
    ("backend", "port"), [("vxlan", "8472/udp"), ("udp", "8285/udp"), ("host-gw", None)]
)
def test_the_backends_port(backend: str, port: str | None) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "c--d", "network": "172.30.0.0/16", "backend": backend, "os": "rhel"},
        "hosts": [
            {"name": "a", "address": "10.0.0.1", "roles": ["etcd", "node"]},
            {"name": "b", "address": "10.0.0.2", "os": "debian", "roles": ["node"]},
        ],
    }
    files = render_hosts(parse_inventory(data, base_dir=Path("/x"))[0])
    udp = [p for *_, p, _a in rules(files["a"][HOST].content) if p.endswith("/udp")]
    assert udp == ([] if port is None else [port] * 3)  # the accepts from a and b, the drop
    assert b"c- -d" in files["a"][HOST].content  # "--" cannot be in an XML comment
    # Debian gets them too: firewalld is firewalld there, and without them its default zone
    # dropped etcd's peers and the backend's port (tests/e2e/test_doctor_firewalld.py).
    assert [p for *_, p, _a in rules(files["b"][HOST].content) if p.endswith("/udp")] == udp
    assert {p for p in files["b"] if p.startswith("/etc/firewalld/")} == {HOST, FORWARD}


# --- facts --------------------------------------------------------------------------------------


def fake_bin(tmp_path: Path, firewalld_state: str, version: str = "1.3.4") -> Path:
    """systemctl, firewall-cmd and iptables stand-ins; each appends its arguments to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "active-zones").write_text(ACTIVE_ZONES)
    (tmp_path / "all-zones").write_text(ALL_ZONES)
    log = tmp_path / "calls.log"
    scripts = {
        "systemctl": f'echo "systemctl $*" >> {log}\n'
        f'[ "$1 $2" = "is-active firewalld" ] && {{ echo {firewalld_state}; exit 0; }}\n'
        # facts.sh asks every unit's state at once: firewalld's is FIREWALLD_STATE
        '[ "$1" = show ] && { for u in "$@"; do case $u in\n'
        f"  firewalld.service) printf 'ActiveState={firewalld_state}\\nUnitFileState=\\n\\n' ;;\n"
        "  *.service) printf 'ActiveState=unknown\\nUnitFileState=\\n\\n' ;;\n"
        "esac; done; exit 0; }\n"
        "echo unknown\n",
        "firewall-cmd": f"""echo "$*" >> {log}
case "$*" in
  --version) echo {version} ;;
  --get-default-zone) echo public ;;
  --get-active-zones) cat {tmp_path}/active-zones ;;
  *--list-all-zones) cat {tmp_path}/all-zones ;;
esac
""",
        "iptables": f'echo "iptables $*" >> {log}\n',
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


def calls(tmp_path: Path, prefix: str = "") -> list[str]:
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    asks = ("is-active", "systemctl show")  # questions, not changes
    return [line for line in lines if line.startswith(prefix) and not any(a in line for a in asks)]


# the agent's digest file, docker's drop-in, the started digest; the overlay Network
NO_FILES = ("/nonexistent",) * 3 + ("172.21.0.0/16",)


def test_facts_report_firewalld_version_zones_and_services(tmp_path: Path) -> None:
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
        "1.3.4",
    )
    assert found.firewalld.has_policies
    assert found.firewalld.legacy() == [("internal", "overlayctl-etcd")]
    assert found.units["firewalld"].active == "active"
    assert hp.FIREWALL_UNIT_NAME in found.units  # the iptables unit's state is a fact too


@pytest.mark.parametrize(
    ("version", "policies"),
    [("0.6.3", False), ("0.8.2", False), ("0.9.3", True), ("1.3.4", True), ("", True)],
)
def test_policies_since_firewalld_0_9(version: str, policies: bool) -> None:
    assert Firewalld("public", version=version).has_policies is policies


def test_facts_without_active_firewalld(tmp_path: Path) -> None:
    found = parse_facts(run_sh(FACTS_SCRIPT.text, fake_bin(tmp_path, "inactive"), *NO_FILES))
    assert found.firewalld is None
    assert calls(tmp_path, "--") == []  # firewall-cmd was never asked


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


def firewall_plan(plan: HostPlan) -> tuple[list[str], list[str]]:
    files, actions = plan.in_phase("firewall")
    return [f.path for f in files], [str(a) for a in actions]


def with_firewalld(fw: Firewalld) -> Any:
    return dataclasses.replace(parse_facts(FACTS), firewalld=fw)


def test_plan_with_firewalld_writes_the_policies_and_reloads() -> None:
    host, desired = rhel_host_files()
    facts = with_firewalld(Firewalld("public", {"eth1": "internal"}, {}, "1.3.4"))
    fresh = plan_host(host, "rhel", desired, {}, facts)
    assert firewall_plan(fresh) == ([FORWARD, HOST], ["reload firewalld"])  # no iptables files
    again = plan_host(host, "rhel", desired, as_current(desired), facts)
    assert firewall_plan(again) == ([], [])  # a re-run: nothing
    current = as_current(desired)
    current[HOST] = RemoteFile(HOST, b"<policy/>\n", 0o644, "root:root")
    assert firewall_plan(plan_host(host, "rhel", desired, current, facts)) == (
        [HOST], ["reload firewalld"],
    )  # fmt: skip


def test_plan_takes_an_older_releases_services_and_accept_zone_away() -> None:
    host, desired = rhel_host_files()
    enabled = {"internal": frozenset({"ssh", "overlayctl-etcd", "overlayctl-node"})}
    old = Firewalld("public", {"eth1": "internal"}, enabled, "1.3.4")
    plan = plan_host(host, "rhel", desired, as_current(desired), with_firewalld(old))
    assert firewall_plan(plan) == ([], ["remove-legacy firewalld services and zone"])


def test_plan_refuses_a_firewalld_without_policies() -> None:
    host, desired = rhel_host_files()
    centos7 = with_firewalld(Firewalld("public", version="0.6.3"))
    with pytest.raises(OverlayctlError, match=r"^node1: firewalld 0.6.3 has no policies \(0.9 or "
                       r"newer, RHEL 8.3\+\): stop and disable firewalld"):  # fmt: skip
        plan_host(host, "rhel", desired, {}, centos7)


def test_plan_without_firewalld_installs_the_iptables_unit_and_a_rerun_does_nothing() -> None:
    host, desired = rhel_host_files()
    facts = parse_facts(FACTS)
    fresh = plan_host(host, "rhel", desired, {}, facts)
    unit = hp.FIREWALL_UNIT_NAME
    assert firewall_plan(fresh) == (
        [hp.FIREWALL_RULES, hp.FIREWALL_UNIT],
        ["daemon-reload systemd", f"enable {unit}", f"start {unit}"],
    )
    running = dataclasses.replace(facts, units={unit: UnitState("active", "enabled")})
    assert firewall_plan(plan_host(host, "rhel", desired, as_current(desired), running)) == ([], [])
    current = as_current(desired)
    current[hp.FIREWALL_RULES] = RemoteFile(hp.FIREWALL_RULES, b"*filter\nCOMMIT\n", 0o644, "root")
    changed = plan_host(host, "rhel", desired, current, running)
    assert firewall_plan(changed) == ([hp.FIREWALL_RULES], [f"restart {unit}"])
    # cluster.host_firewall: false on a host that has the unit from an earlier run
    without = {p: f for p, f in desired.items() if p not in (hp.FIREWALL_RULES, hp.FIREWALL_UNIT)}
    assert firewall_plan(plan_host(host, "rhel", without, {}, running)) == ([], [f"remove {unit}"])
    assert firewall_plan(plan_host(host, "rhel", without, {}, facts)) == ([], [])


# --- apply and reset ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def run(self, argv: list[str], **_kw: Any) -> RunResult:
        self.argvs.append(argv)
        return RunResult(0, "", "")

    def script(self, script: Any, *args: str, **_kw: Any) -> RunResult:
        return self.run([script.label, *args])


def test_apply_reloads_and_removes() -> None:
    remote = Recorder()
    on = SimpleNamespace(remote=remote, family="rhel")  # the host Firewall acts on
    Firewall().act(on, Action("firewall", "reload", "firewalld"))  # type: ignore[arg-type]
    Firewall().act(on, Action("firewall", "remove-legacy", "x"))  # type: ignore[arg-type]
    Firewall().act(on, Action("firewall", "remove", hp.FIREWALL_UNIT_NAME))  # type: ignore[arg-type]
    tail = [hp.FIREWALL_UNIT_NAME, hp.FIREWALL_UNIT, hp.FIREWALL_RULES,
            hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN]  # fmt: skip
    assert remote.argvs == [
        ["firewall-cmd", "--reload"],
        ["firewall-reset", hp.FIREWALLD_DIR, "legacy", *tail],
        ["firewall-reset", hp.FIREWALLD_DIR, "iptables", *tail],
    ]


def reset_args(fw_dir: Path, what: str, tmp_path: Path) -> list[str]:
    files = [str(tmp_path / "unit.service"), str(tmp_path / "firewall.rules")]
    chains = [hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN]
    return [str(fw_dir), what, hp.FIREWALL_UNIT_NAME, *files, *chains]


def ours(fw_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(fw_dir)) for p in fw_dir.rglob("*.xml"))


def test_reset_takes_everything_of_ours_off(tmp_path: Path) -> None:
    bin_dir = fake_bin(tmp_path, "active")
    (tmp_path / "all-zones").write_text(ALL_ZONES.replace("ssh\n", "ssh overlayctl-node\n", 1))
    fw_dir = tmp_path / "firewalld"
    legacy = [
        "services/overlayctl-etcd.xml",
        "services/overlayctl-node.xml",
        "zones/overlayctl.xml",
    ]
    policies = ["policies/overlayctl-host.xml", "policies/overlayctl-forward.xml"]
    for rel in (*legacy, *policies, "services/other.xml", "policies/other.xml"):
        (fw_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (fw_dir / rel).write_text("x")
    (tmp_path / "unit.service").write_text("x")
    (tmp_path / "firewall.rules").write_text("x")
    run_sh(FIREWALL_RESET.text, bin_dir, *reset_args(fw_dir, "all", tmp_path))
    i, f = hp.FIREWALL_INPUT_CHAIN, hp.FIREWALL_FORWARD_CHAIN
    assert calls(tmp_path, "systemctl") == [
        f"systemctl disable --now {hp.FIREWALL_UNIT_NAME}",
        "systemctl daemon-reload",
    ]
    assert calls(tmp_path, "iptables") == [
        f"iptables -w -D INPUT -j {i}", f"iptables -w -F {i}", f"iptables -w -X {i}",
        f"iptables -w -t mangle -D FORWARD -j {f}", f"iptables -w -t mangle -F {f}",
        f"iptables -w -t mangle -X {f}",
    ]  # fmt: skip
    assert calls(tmp_path, "--") == [
        "--permanent --list-all-zones",
        "--permanent --zone=internal --remove-service=overlayctl-etcd",
        "--permanent --zone=public --remove-service=overlayctl-node",
        "--reload",
    ]
    assert ours(fw_dir) == ["policies/other.xml", "services/other.xml"]
    assert not (tmp_path / "unit.service").exists() and not (tmp_path / "firewall.rules").exists()
    # nothing of ours left: firewalld is not even asked
    (tmp_path / "calls.log").unlink()
    run_sh(FIREWALL_RESET.text, bin_dir, *reset_args(fw_dir, "all", tmp_path))
    assert calls(tmp_path, "--") == [] and calls(tmp_path, "systemctl daemon") == []


def test_legacy_and_iptables_modes_leave_the_rest(tmp_path: Path) -> None:
    bin_dir = fake_bin(tmp_path, "active")
    fw_dir = tmp_path / "firewalld"
    for rel in ("services/overlayctl-etcd.xml", "policies/overlayctl-host.xml"):
        (fw_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (fw_dir / rel).write_text("x")
    (tmp_path / "firewall.rules").write_text("x")
    run_sh(FIREWALL_RESET.text, bin_dir, *reset_args(fw_dir, "legacy", tmp_path))
    assert ours(fw_dir) == ["policies/overlayctl-host.xml"]  # the new policy stays
    assert calls(tmp_path, "iptables") == [] and (tmp_path / "firewall.rules").exists()
    (tmp_path / "calls.log").unlink()
    run_sh(FIREWALL_RESET.text, bin_dir, *reset_args(fw_dir, "iptables", tmp_path))
    assert not (tmp_path / "firewall.rules").exists()
    assert calls(tmp_path, "--") == [] and ours(fw_dir) == ["policies/overlayctl-host.xml"]
