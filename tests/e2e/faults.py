"""Real faults on full lab hosts, for `overlayctl doctor`'s e2e suite (tests/e2e/test_doctor.py).

Each injector is a context manager: it breaks one thing for real on ONE host (or on the lab
switch, between two hosts), yields, and puts it back in its `finally` whatever happened, so the
shared cluster is healthy again afterwards. Host faults run over SSH as an operator's mistake
would; path faults (the underlay, corrupted datagrams) live on the lab switch, a namespace of
its own that no host's firewall sees (overlayctl/lab/labs.py: one bridge, one veth per host).

Also here: running doctor as users do (`doctor_json`) and the checks on its document.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import select
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from overlayctl.lab import state
from tests.e2e.promises import sh
from tests.labtools import ETCDCTL, cli
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
SUBNETS = "/coreos.com/network/subnets/"


@contextlib.contextmanager
def host_change(lab: state.LabState, host: str, apply: str, undo: str) -> Iterator[None]:
    """APPLY on HOST now, UNDO when the block ends (also on failure); both must succeed."""
    sh(lab, host, apply)
    try:
        yield
    finally:
        sh(lab, host, undo)


# -- faults on one host ------------------------------------------------------------------------


def firewall_drop(lab: state.LabState, host: str, port: int) -> contextlib.AbstractContextManager:
    """HOST's INPUT drops the backend's UDP PORT, ahead of the agent's own rules."""
    rule = f"INPUT -p udp --dport {port} -j DROP"
    return host_change(lab, host, f"iptables -I {rule}", f"iptables -D {rule}")


def forwarding_off(lab: state.LabState, host: str) -> contextlib.AbstractContextManager:
    """net.ipv4.ip_forward=0 on HOST (put back to what it was)."""
    was = sh(lab, host, "sysctl -n net.ipv4.ip_forward").strip()
    return host_change(lab, host, "sysctl -qw net.ipv4.ip_forward=0",
                       f"sysctl -qw net.ipv4.ip_forward={shlex.quote(was)}")  # fmt: skip


def lowered_mtu(
    lab: state.LabState, host: str, mtu: int, iface: str = "eth0"
) -> contextlib.AbstractContextManager:
    """HOST's underlay link at MTU (the agent wrote the overlay MTU for the old one)."""
    was = sh(lab, host, f"cat /sys/class/net/{iface}/mtu").strip()
    return host_change(lab, host, f"ip link set dev {iface} mtu {mtu}",
                       f"ip link set dev {iface} mtu {shlex.quote(was)}")  # fmt: skip


def route_deleted(lab: state.LabState, host: str, subnet: str) -> contextlib.AbstractContextManager:
    """HOST's route to a peer's SUBNET deleted (the agent restores routes only when the lease
    changes, so it stays gone); put back exactly as it was."""
    line = sh(lab, host, f"ip -4 route show exact {subnet}").strip()
    assert line, f"{host} has no route to {subnet}"
    return host_change(lab, host, f"ip route del {subnet}", f"ip route replace {line}")


def fdb_deleted(
    lab: state.LabState, host: str, peer_ip: str, device: str = "flannel.1"
) -> contextlib.AbstractContextManager:
    """HOST's vxlan fdb entry towards PEER_IP deleted (no learning: nothing re-adds it)."""
    lines = sh(lab, host, f"bridge fdb show dev {device}").splitlines()
    macs = [ln.split()[0] for ln in lines if f" dst {peer_ip} " in f"{ln} "]
    assert len(macs) == 1, (host, peer_ip, lines)
    entry = f"{macs[0]} dev {device} dst {peer_ip}"
    undo = f"bridge fdb append {entry} self permanent"
    return host_change(lab, host, f"bridge fdb del {entry}", undo)


def docker0_readdressed(lab: state.LabState, host: str) -> contextlib.AbstractContextManager:
    """docker0 on HOST loses the lease's .1 for another address of the subnet (its containers'
    gateway is gone); the .1 comes back afterwards."""
    (was,) = sh(lab, host, "ip -4 -o addr show dev docker0 | awk '{print $4}'").split()
    net, _, prefix = was.partition("/")
    other = ".".join([*net.split(".")[:3], "254"]) + f"/{prefix}"
    swap = "ip addr del {old} dev docker0 && ip addr add {new} dev docker0"
    return host_change(lab, host, swap.format(old=was, new=other), swap.format(old=other, new=was))


def etcd_blocked(lab: state.LabState, host: str) -> contextlib.AbstractContextManager:
    """Root's connections to any etcd client port dropped on HOST: its agent (root) cannot
    reach etcd; an etcd member there (user etcd) keeps serving the others."""
    rule = "OUTPUT -p tcp --dport 2379 -m owner --uid-owner 0 -j DROP"
    return host_change(lab, host, f"iptables -I {rule}", f"iptables -D {rule}")


@contextlib.contextmanager
def expired_client_cert(
    lab: state.LabState, host: str, path: str = "/etc/overlayctl/pki/etcd-client.crt"
) -> Iterator[None]:
    """HOST's etcd client certificate replaced by one that expired yesterday: the same subject,
    key and extensions, signed by the cluster's own CA (the lab's local PKI), so only its
    dates are wrong. The original is written back afterwards, byte for byte."""
    original = sh(lab, host, f"cat {path}")
    (pki,) = [p / "pki" for p in (lab.dir / "overlayctl-state").iterdir()]
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(original.encode())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(ca_cert.subject)
               .public_key(cert.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=2))
               .not_valid_after(now - datetime.timedelta(days=1)))  # fmt: skip
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    expired = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    write = "printf %s {} > " + path  # the file keeps its owner and mode
    with host_change(lab, host, write.format(shlex.quote(expired.decode())),
                     write.format(shlex.quote(original))):  # fmt: skip
        yield


@contextlib.contextmanager
def strict_rp_filter(
    lab: state.LabState, host: str, own_subnet: str, peer_subnet: str
) -> Iterator[None]:
    """Strict reverse-path filtering on HOST where the way back to PEER_SUBNET is not the way
    its overlay traffic comes in: a policy route (as on a multi-homed host) sends HOST's own
    overlay addresses' traffic to PEER_SUBNET out of eth0, so every overlay packet from the
    peer to HOST's addresses fails the check and is dropped (IPReversePathFilter counts it)."""
    table = 7000 + secrets.randbelow(900)
    assert sh(lab, host, f"ip -4 route show table {table} 2>/dev/null || :").strip() == ""
    was = sh(lab, host, "sysctl -n net.ipv4.conf.all.rp_filter").strip()
    rule = f"iif lo from {own_subnet} to {peer_subnet} lookup {table} pref {table}"
    apply = (f"ip rule add {rule} && ip route add {peer_subnet} dev eth0 table {table}"
             " && sysctl -qw net.ipv4.conf.all.rp_filter=1")  # fmt: skip
    undo = (f"sysctl -qw net.ipv4.conf.all.rp_filter={shlex.quote(was)};"
            f" ip rule del pref {table}; ip route flush table {table}")  # fmt: skip
    with host_change(lab, host, apply, undo):
        yield


@dataclass
class SshCut:
    """What `ssh_cut_when` saw: when the cut fired (the host's clock, which is this machine's),
    None if it never did."""

    fired: float | None = None


_CUT_MARK, _CUT_PID = "/run/overlayctl-test-ssh-cut", "/run/overlayctl-test-ssh-cut.pid"
_CUT_RULE = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"]


@contextlib.contextmanager
def ssh_cut_when(lab: state.LabState, host: str, condition: str) -> Iterator[SshCut]:
    """HOST's sshd cut off (every new and open connection reset) the moment the shell test
    CONDITION (no single quotes) holds there, as when a workstation loses the network in the
    middle of a run: a loop on HOST polls it every 0.05 s for at most 30 s, fires once and
    writes the time. When
    the block ends the rule goes (from the host's namespace, not over SSH), the loop is killed
    and `fired` is set; an assertion on it tells whether the cut happened at all."""
    cut = SshCut()
    rule = " ".join(_CUT_RULE)
    loop = (f"nohup sh -c 'for i in $(seq 1 600); do if {condition}; then "
            f"iptables -I {rule} && date +%s.%N > {_CUT_MARK}; exit; fi; sleep 0.05; done' "
            f">/dev/null 2>&1 & echo $! > {_CUT_PID}")  # fmt: skip
    sh(lab, host, loop)
    try:
        yield cut
    finally:
        netns = ["ip", "netns", "exec", lab.host(host).netns, "iptables"]
        subprocess.run([*netns, "-D", *_CUT_RULE], capture_output=True, check=False, timeout=30)
        mark = sh(lab, host, f"kill $(cat {_CUT_PID}) 2>/dev/null; cat {_CUT_MARK} 2>/dev/null; "
                             f"rm -f {_CUT_PID} {_CUT_MARK}")  # fmt: skip
        cut.fired = float(mark) if mark.strip() else None


# -- faults in etcd ----------------------------------------------------------------------------


def lease_key(lab: state.LabState, member: str, public_ip: str) -> str | None:
    """The key of the lease naming PUBLIC_IP (None: there is none)."""
    out = sh(lab, member, f"{ETCDCTL} get {SUBNETS} --prefix").splitlines()
    for key, value in zip(out[::2], out[1::2], strict=False):
        if json.loads(value).get("PublicIP") == public_ip:
            return key
    return None


@contextlib.contextmanager
def agent_gone(lab: state.LabState, host: str, member: str) -> Iterator[None]:
    """HOST's agent stopped and its lease deleted from etcd (as after an agent that crashed
    and a lease that expired). Afterwards the agent starts again and leases its old subnet."""
    address = lab.host(host).address
    key = lease_key(lab, member, address)
    assert key, f"{host} holds no lease"
    try:
        sh(lab, host, "systemctl stop overlay-agent")
        sh(lab, member, f"{ETCDCTL} del {key}")
        yield
    finally:
        sh(lab, host, "systemctl start overlay-agent")
        wait_for(lambda: lease_key(lab, member, address) == key, 60, f"{host} leases {key}", 1)


@contextlib.contextmanager
def duplicate_lease(lab: state.LabState, host: str, member: str, subnet: str) -> Iterator[None]:
    """A second lease naming HOST's PublicIP, for SUBNET (free), written into etcd; deleted
    afterwards. Its vxlan VtepMAC is made up, so deleting it takes no real peer's entries."""
    address = lab.host(host).address
    own = json.loads(sh(lab, member, f"{ETCDCTL} get {lease_key(lab, member, address)}"
                        " --print-value-only"))  # fmt: skip
    data = dict(own.get("BackendData") or {})
    if "VtepMAC" in data:
        data["VtepMAC"] = "02:00:00:00:00:fa"
    value = json.dumps({**own, "BackendData": data or None})
    key = SUBNETS + subnet.replace("/", "-")
    assert sh(lab, member, f"{ETCDCTL} get {key} --print-value-only").strip() == "", key
    try:
        sh(lab, member, f"{ETCDCTL} put {key} {shlex.quote(value)}")
        yield
    finally:
        sh(lab, member, f"{ETCDCTL} del {key}")


# -- faults on the path between two hosts (the lab switch) -----------------------------------


def switch_iptables(lab: state.LabState, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", lab.switch_netns, "iptables", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def switch_rules(lab: state.LabState, rules: list[list[str]]) -> Iterator[None]:
    """RULES appended to the lab switch's FORWARD chain (bridged frames pass it: bridge
    netfilter is on there), deleted afterwards."""
    added: list[list[str]] = []
    try:
        for rule in rules:
            done = switch_iptables(lab, "-I", "FORWARD", *rule)
            assert done.returncode == 0, (rule, done.stderr)
            added.append(rule)
        yield
    finally:
        for rule in added:
            switch_iptables(lab, "-D", "FORWARD", *rule)


def between(src: str, dst: str) -> list[str]:
    """The match of frames bridged from SRC's port to DST's port."""
    return ["-m", "physdev", "--physdev-in", f"p-{src}", "--physdev-out", f"p-{dst}"]


def path_drop(
    lab: state.LabState, src: str, dst: str, port: int
) -> contextlib.AbstractContextManager:
    """The underlay between SRC and DST loses the backend's UDP PORT and ICMP from SRC to DST
    (a hypervisor or switch filter): neither host's own firewall sees anything."""
    on_path = between(src, dst)
    return switch_rules(lab, [[*on_path, "-p", "udp", "--dport", str(port), "-j", "DROP"],
                              [*on_path, "-p", "icmp", "-j", "DROP"]])  # fmt: skip


@contextlib.contextmanager
def corrupted_datagrams(lab: state.LabState, src: str, dst: str, port: int) -> Iterator[None]:
    """UDP datagrams to PORT from SRC to DST arrive with a flipped byte (tests/e2e/
    nfqueue_corrupt.py on the switch): DST's kernel counts UDP checksum errors and drops them."""
    queue = 100 + secrets.randbelow(60000)
    argv = ["ip", "netns", "exec", lab.switch_netns, sys.executable, "-m",
            "tests.e2e.nfqueue_corrupt", str(queue)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 15)
        assert readable and proc.stdout.readline().strip() == "ready", "the corrupter did not bind"
        rule = [*between(src, dst), "-p", "udp", "--dport", str(port), "-j", "NFQUEUE",
                "--queue-num", str(queue), "--queue-bypass"]  # fmt: skip
        with switch_rules(lab, [rule]):
            yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- doctor as users run it, and its document ----------------------------------------------------


def doctor_json(
    lab: state.LabState, inventory: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`overlayctl doctor -i INVENTORY ARGS -o json`: stdout is exactly one JSON document and
    the exit code says the verdict (0 ok, 1 not)."""
    result = cli(lab, "doctor", "-i", str(inventory), *args, "-o", "json")
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not one JSON document: {result.stdout!r}\n{result.stderr}") from exc
    assert result.returncode == (0 if doc["ok"] else 1), (result.returncode, summary(doc))
    return result, doc


def summary(doc: dict[str, Any]) -> str:
    """Doctor's findings and errors, one line each, for assertion messages."""
    lines = [f"{f['severity']} {f['check']} {f['host']}->{f['peer']} hop={f['hop']}: "
             f"{f['message']} [{f['evidence'][:160]}]" for f in doc["findings"]]  # fmt: skip
    return "\n".join([f"ok={doc['ok']}", *lines, *map(str, doc["errors"]), *doc.get("notes", [])])


def errors(doc: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["check"] == check and f["severity"] == "error"]


def assert_healthy(doc: dict[str, Any]) -> None:
    """No false alarm: ok, no error finding, nothing doctor could not do."""
    assert doc["ok"] is True and doc["errors"] == [], summary(doc)
    assert not [f for f in doc["findings"] if f["severity"] == "error"], summary(doc)


def assert_no_false_alarm(lab: state.LabState, inventory: Path, runs: int = 3) -> None:
    """RUNS doctor runs on a healthy cluster: every one ok with exit 0."""
    for _ in range(runs):
        result, doc = doctor_json(lab, inventory)
        assert result.returncode == 0
        assert_healthy(doc)
