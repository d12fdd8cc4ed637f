"""`overlayctl doctor` proven on live lab hosts (issue #18), on the e2e tier's shared vxlan
cluster: no false alarm when healthy, nothing changed on any host, the host and pair selection,
and one real fault per check (tests/e2e/faults.py), each injected on ONE host or path: `verify`
(or a ping) first shows the fault really breaks or endangers traffic, then doctor must report
an `error` of that check naming that host (and the peer where one applies), and once the fault
is removed doctor is ok again. Every fault is removed in its injector's `finally`.

The other backends' no-false-alarm runs live where those clusters are already booted
(tests/e2e/test_day2_backend.py: host-gw, udp and vxlan again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from overlayctl.lab import state
from tests.e2e import faults
from tests.e2e.conftest import Cluster
from tests.e2e.faults import assert_healthy, doctor_json, errors, summary
from tests.e2e.promises import IMAGE, leases, run, sh
from tests.labtools import cli, on
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
PORT = 8472  # vxlan


@dataclass(frozen=True)
class Lab:
    """The shared cluster as these tests use it: its `three` inventory, each host's lease
    subnet and address."""

    lab: state.LabState
    three: Path
    subnet: dict[str, str]
    address: dict[str, str]


@pytest.fixture
def vx(shared_cluster: Cluster) -> Lab:
    lab, three, _ = shared_cluster
    doc = run(lab, "status", "-i", str(three))[1]
    return Lab(lab, three, leases(doc), {h: lab.host(h).address for h in THREE})


def failed_pairs(vx: Lab) -> set[tuple[str, str]]:
    """The (from, to) pairs `verify` finds broken (plain or Don't-Fragment); when there are
    some, verify ends by naming the doctor run for each."""
    result, doc = run(vx.lab, "verify", "-i", str(vx.three), *IMAGE)
    broken = {(p["from"], p["to"]) for p in doc["pairs"] if not (p["ok"] and p["mtu_ok"])}
    assert (result.returncode == 1) == bool(broken), (result.returncode, doc)
    for a, b in broken - {(h, h) for h in THREE}:  # a host's own diagonal is no pair
        assert f"overlayctl doctor --pair {min(a, b)},{max(a, b)}" in doc.get("next", []), doc
    return broken


def found(doc: dict[str, Any], check: str, host: str, peer: str | None = None) -> dict[str, Any]:
    """The error finding of CHECK naming HOST (and PEER, when given), printed for the record;
    no error names a host the fault is not on."""
    matching = [f for f in errors(doc, check) if f["host"] == host and peer in (None, f["peer"])]
    assert matching, f"no {check} error on {host} (peer {peer}):\n{summary(doc)}"
    only_about(doc, host, *([peer] if peer else []))
    print(f"doctor found {check}: {summary(doc)}")  # the report's evidence (pytest -rP)
    return matching[0]


def found_on_pair(doc: dict[str, Any], check: str, a: str, b: str) -> dict[str, Any]:
    """The error finding of CHECK on the pair A, B (either side may be the host)."""
    matching = [f for f in errors(doc, check) if {f["host"], f["peer"]} == {a, b}]
    assert matching, f"no {check} error on {a}/{b}:\n{summary(doc)}"
    only_about(doc, a, b)
    print(f"doctor found {check}: {summary(doc)}")
    return matching[0]


def only_about(doc: dict[str, Any], *hosts: str) -> None:
    """Doctor localises: every error finding names one of HOSTS (as its host or its peer)."""
    stray = [f for f in doc["findings"]
             if f["severity"] == "error" and not {f["host"], f["peer"]} & set(hosts)]  # fmt: skip
    assert not stray, summary(doc)


def healthy_again(vx: Lab) -> None:
    assert_healthy(doctor_json(vx.lab, vx.three)[1])


def routed(vx: Lab, host: str, subnet: str) -> bool:
    return on(vx.lab, host, f"ip -4 route show exact {subnet}").stdout.strip() != ""


def counter(vx: Lab, host: str, name: str) -> int:
    """A kernel counter (nstat, absolute, without touching nstat's history file)."""
    out = sh(vx.lab, host, f"nstat -asz {name}").split()
    return int(out[out.index(name) + 1])


# -- no false alarm, changes nothing, selection ------------------------------------------------


def test_a_healthy_cluster_has_no_false_alarm_three_runs(vx) -> None:
    for _ in range(3):
        result, doc = doctor_json(vx.lab, vx.three)
        assert result.returncode == 0
        assert_healthy(doc)
        assert doc["hosts"] == THREE and {"notes", "errors"} <= set(doc), doc
        for finding in doc["findings"]:  # warnings may be there; each is well formed
            assert set(finding) == {"host", "peer", "check", "severity", "message", "evidence",
                                    "fix", "hop"}, finding  # fmt: skip


# What doctor must leave as it found it on a host. Chain counters are cut from iptables-save;
# neighbours are compared by entry (address, device, link address), not state; the bridge's
# learned (dynamic) fdb entries come and go with traffic, so only the configured ones count;
# processes by command line outside this SSH session; containers by id, name and image.
SNAPSHOT = {
    "iptables": "iptables-save | grep -v '^#' | sed -E 's/ \\[[0-9]+:[0-9]+\\]$//'",
    "ip6tables": "ip6tables-save 2>/dev/null | grep -v '^#' | sed -E 's/ \\[[0-9]+:[0-9]+\\]$//'",
    "routes": "{ ip -4 route show table all; ip -6 route show table all; ip rule; }"
    " | sed 's/ linkdown//'",  # docker0 has no carrier while it has no container
    "neighbours": "ip neigh show | grep -Ev ' (FAILED|INCOMPLETE)' | awk '{print $1, $3, $5}'"
    " | sort",
    "fdb": "bridge fdb show | grep -E 'permanent|static' | sort",
    "links": "ip -o link show | awk '{print $2, $5}'",
    "sysctls": "sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter",
    "files": "find /etc/overlayctl /run/flannel /etc/docker -printf '%p %m %U %s\\n' | sort;"
    " find /etc/overlayctl /run/flannel /etc/docker -type f -print0 | sort -z"
    " | xargs -0 sha256sum",
    "tmp": "ls -A /tmp /var/tmp",
    "tracefs": "grep -E ' (tracefs|debugfs) ' /proc/mounts;"
    " ls /sys/kernel/tracing/instances 2>/dev/null || echo unreadable",
    "processes": "ps -eo sid=,args= | awk -v me=$(ps -o sid= $$ | tr -d ' ')"
    " '$1 != me {$1=\"\"; print}' | sort",
    "containers": "docker ps -a --format '{{.ID}} {{.Names}} {{.Image}}' | sort",
}  # fmt: skip


TRANSIENT = ("processes", "tracefs")


MARK = "### overlayctl-test-snapshot "


def snapshot(vx: Lab, host: str) -> dict[str, str]:
    """SNAPSHOT on HOST in one SSH round trip: name -> output."""
    script = "; ".join(f"echo '{MARK}{name}'; {{ {cmd}; }}" for name, cmd in SNAPSHOT.items())
    parts = [part.partition("\n") for part in sh(vx.lab, host, script).split(MARK)[1:]]
    found = {name: text for name, _, text in parts}
    assert list(found) == list(SNAPSHOT), found.keys()
    # Not vacuous: each part that always has lines has them.
    for name in ("iptables", "routes", "links", "files", "processes"):
        assert found[name].strip(), (host, name)
    assert "*filter" in found["iptables"] and "overlay-agent" in found["processes"], host
    return found


def test_doctor_changes_nothing_and_leaves_nothing_behind(vx) -> None:
    before = {h: snapshot(vx, h) for h in THREE}
    table = cli(vx.lab, "doctor", "-i", str(vx.three))  # the table, as people read it
    assert table.returncode == 0, table.stdout + table.stderr
    verdict = table.stdout.strip().splitlines()[-1]
    assert verdict == "doctor: 3 hosts, 6 pairs probed: no problem found", table.stdout
    for host in THREE:
        # sshd's session processes of doctor's connections may take a moment to exit; tracefs
        # instances are the kernel's, one set for every lab on this machine (another worker's
        # doctor run may hold one for a few seconds).
        wait_for(lambda h=host: all(snapshot(vx, h)[k] == before[h][k] for k in TRANSIENT), 20,
                 f"{host}: doctor's processes and trace instances gone", 0.5)  # fmt: skip
        after = snapshot(vx, host)
        changed = {k: (before[host][k], after[k]) for k in SNAPSHOT if before[host][k] != after[k]}
        assert not changed, (host, changed)


def test_bad_selections_are_refused_before_any_host_is_contacted(vx) -> None:
    for args in (["--pair", "node1"], ["--pair", "node1,node9"], ["node9"]):
        result = cli(vx.lab, "doctor", "-i", str(vx.three), *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip(), args


# -- one fault per check -------------------------------------------------------------------


def test_firewall_dropping_the_vxlan_port_on_node2(vx) -> None:
    with faults.firewall_drop(vx.lab, "node2", PORT):
        assert {("node1", "node2"), ("node3", "node2")} <= failed_pairs(vx)
        result, doc = doctor_json(vx.lab, vx.three)
        found(doc, "firewall", "node2")
        # The selection: a pair without node2 sees nothing wrong; node2 alone is found.
        result, pair = doctor_json(vx.lab, vx.three, "--pair", "node1,node3")
        assert result.returncode == 0 and pair["hosts"] == ["node1", "node3"], summary(pair)
        assert_healthy(pair)
        result, alone = doctor_json(vx.lab, vx.three, "node2")
        assert result.returncode == 1 and alone["hosts"] == ["node2"], summary(alone)
        found(alone, "firewall", "node2")
        assert {f["host"] for f in alone["findings"]} <= {"node2"}, summary(alone)
    healthy_again(vx)


def test_underlay_dropping_between_node1_and_node2(vx) -> None:
    with faults.path_drop(vx.lab, "node1", "node2", PORT):
        assert {("node1", "node2"), ("node2", "node1")} <= failed_pairs(vx)
        doc = doctor_json(vx.lab, vx.three, "--pair", "node1,node2")[1]
        found_on_pair(doc, "underlay", "node1", "node2")
        # On the path: neither host's firewall is blamed.
        assert not errors(doc, "firewall"), summary(doc)
    healthy_again(vx)


def test_forwarding_off_on_node2(vx) -> None:
    with faults.forwarding_off(vx.lab, "node2"):
        assert {("node1", "node2"), ("node2", "node1")} <= failed_pairs(vx)
        found(doctor_json(vx.lab, vx.three)[1], "forwarding", "node2")
    healthy_again(vx)


def test_underlay_mtu_lowered_on_node2(vx) -> None:
    with faults.lowered_mtu(vx.lab, "node2", 1400):
        assert ("node1", "node2") in failed_pairs(vx)  # the DF ping at the overlay MTU
        doc = doctor_json(vx.lab, vx.three)[1]
        mtu = [f for f in errors(doc, "mtu") if "node2" in (f["host"], f["peer"])]
        assert mtu, summary(doc)
        only_about(doc, "node2")
        print(f"doctor found mtu: {summary(doc)}")
    healthy_again(vx)


@pytest.mark.parametrize("entry", ["route", "fdb"])
def test_a_peer_route_or_fdb_entry_deleted_on_node1(vx, entry: str) -> None:
    if entry == "route":
        fault = faults.route_deleted(vx.lab, "node1", vx.subnet["node2"])
    else:
        fault = faults.fdb_deleted(vx.lab, "node1", vx.address["node2"])
    with fault:
        assert ("node1", "node2") in failed_pairs(vx)
        found(doctor_json(vx.lab, vx.three)[1], "routes", "node1", "node2")
    healthy_again(vx)


def test_docker0_without_the_lease_gateway_on_node2(vx) -> None:
    with faults.docker0_readdressed(vx.lab, "node2"):
        assert ("node2", "node1") in failed_pairs(vx)
        found(doctor_json(vx.lab, vx.three)[1], "bridge", "node2")
    healthy_again(vx)


def test_agent_stopped_and_its_lease_gone_on_node2(vx) -> None:
    with faults.agent_gone(vx.lab, "node2", "node1"):
        wait_for(lambda: not routed(vx, "node1", vx.subnet["node2"]), 30, "node1 unroutes node2")
        assert ("node1", "node2") in failed_pairs(vx)
        doc = doctor_json(vx.lab, vx.three)[1]
        found(doc, "agent", "node2")
        # node2 has no lease to send its tunnel probes from: not an underlay problem
        assert errors(doc, "underlay") == [], summary(doc)
    for peer in ("node1", "node3"):
        wait_for(lambda p=peer: routed(vx, p, vx.subnet["node2"]), 30, f"{peer} routes node2", 0.5)
    healthy_again(vx)


def test_a_duplicate_lease_for_node2s_address(vx) -> None:
    taken = set(vx.subnet.values())
    spare = next(s for s in (f"172.21.{n}.0/24" for n in range(250, 200, -1)) if s not in taken)
    with faults.duplicate_lease(vx.lab, "node2", "node1", spare):
        # Endangered: node1 now sends a subnet node2 does not hold to node2.
        wait_for(lambda: routed(vx, "node1", spare), 30, "node1 routes the duplicate", 0.5)
        doc = doctor_json(vx.lab, vx.three)[1]
        found(doc, "lease", "node2")
        # the probes aim at the lease node2's agent holds, not the duplicate's made-up VtepMAC
        assert errors(doc, "underlay") == [], summary(doc)
    wait_for(lambda: not routed(vx, "node1", spare), 30, "node1 unroutes the duplicate", 0.5)
    healthy_again(vx)


def test_corrupted_datagrams_from_node1_to_node2(vx) -> None:
    with faults.corrupted_datagrams(vx.lab, "node1", "node2", PORT):
        before = counter(vx, "node2", "UdpInCsumErrors")
        assert ("node1", "node2") in failed_pairs(vx)
        assert counter(vx, "node2", "UdpInCsumErrors") > before  # the receiver drops them
        doc = doctor_json(vx.lab, vx.three, "--pair", "node1,node2")[1]
        found(doc, "checksum", "node2", "node1")
    healthy_again(vx)


def overlay_ping(vx: Lab, src: str, address: str) -> bool:
    return on(vx.lab, src, f"ping -n -q -c 2 -i 0.2 -W 1 {address}").returncode == 0


def test_strict_rp_filter_dropping_overlay_traffic_on_node2(vx) -> None:
    flannel = vx.subnet["node2"].split("/")[0]  # node2's flannel.1 address (the subnet's .0)
    assert overlay_ping(vx, "node1", flannel)
    with faults.strict_rp_filter(vx.lab, "node2", vx.subnet["node2"], vx.subnet["node1"]):
        before = counter(vx, "node2", "TcpExtIPReversePathFilter")
        assert not overlay_ping(vx, "node1", flannel)
        assert counter(vx, "node2", "TcpExtIPReversePathFilter") > before
        found(doctor_json(vx.lab, vx.three)[1], "rp_filter", "node2")
    assert overlay_ping(vx, "node1", flannel)
    healthy_again(vx)


# What node2's agent does first with etcd: a TLS connection with its own certificate, then a
# request (etcd closes the connection on a certificate it refuses; the alert comes as it reads).
AGENT_TLS = (
    'python3 -c \'import socket, ssl, sys; pki = "/etc/overlayctl/pki/";'
    ' c = ssl.create_default_context(cafile=pki + "ca.crt");'
    ' c.load_cert_chain(pki + "etcd-client.crt", pki + "etcd-client.key");'
    " s = c.wrap_socket(socket.create_connection((sys.argv[1], 2379), 3),"
    ' server_hostname=sys.argv[1]); s.sendall(b"GET /version HTTP/1.1\\r\\nHost: e\\r\\n\\r\\n");'
    ' sys.exit(0 if s.recv(64).startswith(b"HTTP/1.1 200") else 1)\' {}'
)
ETCD_FAULTS = {"blocked": faults.etcd_blocked, "expired-cert": faults.expired_client_cert}


@pytest.mark.parametrize("fault", list(ETCD_FAULTS))
def test_etcd_out_of_reach_of_node2s_agent(vx, fault: str) -> None:
    reach = AGENT_TLS.format(vx.address["node1"])
    assert on(vx.lab, "node2", reach).returncode == 0
    with ETCD_FAULTS[fault](vx.lab, "node2"):
        assert on(vx.lab, "node2", reach).returncode != 0
        found(doctor_json(vx.lab, vx.three)[1], "etcd", "node2")
    assert on(vx.lab, "node2", reach).returncode == 0
    healthy_again(vx)
