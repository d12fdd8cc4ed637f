"""What `status`, `verify` and `plan` print and put in their JSON, for the states an operator
must not misread: a FAIL cell, an unhealthy member, DEGRADED and UNAVAILABLE, etcd errors.

Tables are read back cell by cell from the column spans of tabulate's dashed rule, so each
assertion names the exact cell text and also checks that every row lines up with its header.
"""

from __future__ import annotations

import itertools
import re

import pytest

from overlayctl.actions.status import HostStatus
from overlayctl.actions.verify import PairResult, VerifyReport
from overlayctl.etcd.cluster import ClusterStatus, LeaseInfo, MemberStatus
from overlayctl.output import plan_doc, plan_text, status_doc, status_text, verify_doc, verify_text
from overlayctl.plan.changes import Action, DesiredFile, FileChange, HostPlan
from overlayctl.plan.facts import RemoteFile

CONFIG = '{"Network":"172.21.0.0/16","Backend":{"Type":"vxlan"}}'


def cells(table: str) -> list[list[str]]:
    """Header and rows of one tabulate table as cells, cut at the dashed rule's column spans;
    text outside a span (a misaligned row) fails."""
    header, rule, *rows = table.splitlines()
    assert re.fullmatch(r"-+( +-+)*", rule), rule
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    out = []
    for line in (header, *rows):
        padded = line.ljust(len(rule))
        assert len(padded) == len(rule), line
        gaps = [padded[end:start] for (_, end), (start, _) in itertools.pairwise(spans)]
        assert all(not gap.strip() for gap in gaps), line
        out.append([padded[start:end].strip() for start, end in spans])
    return out


def member(name: str, last: int, healthy: bool = True, **kw: object) -> MemberStatus:
    ip = f"192.168.255.{last}"
    values: dict = {"db_size": 20480, "version": "3.4.23"} if healthy else {}
    values.update(kw)
    return MemberStatus(name, [f"https://{ip}:2380"], [f"https://{ip}:2379"], healthy, **values)


def lease(subnet: str, last: int | None, host: str | None, ttl: int | None) -> LeaseInfo:
    ip = f"192.168.255.{last}" if last else ""
    return LeaseInfo(subnet, ip, "vxlan", ttl, host)


# --- status: etcd degraded, hosts with every kind of problem ------------------------------------


@pytest.fixture
def degraded() -> tuple[ClusterStatus, list[HostStatus]]:
    members = [
        member("node1", 154),
        member("node2", 155, healthy=False, error="context deadline exceeded"),
        member("node3", 156, leader=True, db_size=3 * 2**20 + 2**19),
    ]
    leases = [
        lease("172.21.23.0/24", 156, "node3", 86340),
        lease("172.21.81.0/24", 154, "node1", 3599),
        lease("172.21.89.0/24", 155, "node2", -5),  # expired while we read it
        lease("172.21.90.0/24", 200, None, None),  # a reservation for a host that is gone
        LeaseInfo("172.21.91.0-24", "", "", None, None, "not JSON: Expecting value"),
    ]
    status = ClusterStatus(
        members, [], {"Network": "172.21.0.0/16", "Backend": {"Type": "vxlan"}}, CONFIG, leases
    )
    hosts = [
        HostStatus("node1", agent_active=True, agent_ready=True, lease="172.21.81.1/24",
                   mtu=1450, docker0="172.21.81.1/24", docker_active=True),
        HostStatus("node2", agent_active=False, lease="172.21.89.1/24", mtu=1450,
                   docker0="172.21.89.1/24", docker_active=False),
        HostStatus("node3", agent_active=True, agent_ready=True, lease="172.21.23.1/24",
                   mtu=1450, docker0="172.17.0.1/16", docker_active=True,
                   missing_routes=["172.21.81.0/24", "172.21.89.0/24"]),
        HostStatus("node4", error="node4 (192.168.255.157): SSH port 22 unreachable: timed out"),
    ]  # fmt: skip
    return status, hosts


def test_status_text_degraded_members_table(degraded) -> None:
    head, config, _leases, _hosts = status_text(*degraded).split("\n\n")
    verdict, table = head.split("\n", 1)
    assert verdict == "etcd: DEGRADED: quorum held, 2 of 3 members healthy"
    assert cells(table) == [
        ["member", "healthy", "leader", "client urls", "db", "version", "error"],
        ["node1", "yes", "", "https://192.168.255.154:2379", "20 KiB", "3.4.23", ""],
        ["node2", "NO", "", "https://192.168.255.155:2379", "", "", "context deadline exceeded"],
        ["node3", "yes", "*", "https://192.168.255.156:2379", "3.5 MiB", "3.4.23", ""],
    ]
    assert config == f"network config: {CONFIG}"


def test_status_text_leases_stale_reserved_expired_unreadable(degraded) -> None:
    leases = status_text(*degraded).split("\n\n")[2]
    stale = "(stale: no such host)"
    assert cells(leases) == [
        ["lease", "host", "public ip", "backend", "expires in", "reservation", "error"],
        ["172.21.23.0/24", "node3", "192.168.255.156", "vxlan", "23h59m", "", ""],
        ["172.21.81.0/24", "node1", "192.168.255.154", "vxlan", "0h59m", "", ""],
        ["172.21.89.0/24", "node2", "192.168.255.155", "vxlan", "0h00m", "", ""],
        ["172.21.90.0/24", stale, "192.168.255.200", "vxlan", "never", "yes", ""],
        ["172.21.91.0-24", "(unreadable)", "", "", "never", "", "not JSON: Expecting value"],
    ]


def test_status_text_hosts_table(degraded) -> None:
    hosts = status_text(*degraded).split("\n\n")[3]
    unreachable = "node4 (192.168.255.157): SSH port 22 unreachable: timed out"
    routes = "172.21.81.0/24, 172.21.89.0/24"
    assert cells(hosts) == [
        ["host", "agent", "ready", "docker", "lease", "docker0", "bip ok", "mtu",
         "missing routes", "error"],
        ["node1", "yes", "yes", "yes", "172.21.81.1/24", "172.21.81.1/24", "yes", "1450", "", ""],
        ["node2", "NO", "NO", "NO", "172.21.89.1/24", "172.21.89.1/24", "yes", "1450", "", ""],
        ["node3", "yes", "yes", "yes", "172.21.23.1/24", "172.17.0.1/16", "NO", "1450", routes,
         ""],
        ["node4", "NO", "NO", "NO", "", "", "NO", "", "", unreachable],
    ]  # fmt: skip


def test_status_doc_degraded(degraded) -> None:
    doc = status_doc(*degraded)
    assert (doc["healthy"], doc["network_config"]) == (False, degraded[0].network_config)
    etcd = doc["etcd"]
    assert (etcd["healthy"], etcd["state"], etcd["quorum"]) == (False, "degraded", True)
    assert (etcd["unreachable"], etcd["errors"]) == ([], [])
    assert etcd["members"][1] == {
        "name": "node2", "peer_urls": ["https://192.168.255.155:2380"],
        "client_urls": ["https://192.168.255.155:2379"], "leader": False, "healthy": False,
        "db_size": None, "version": "", "error": "context deadline exceeded",
    }  # fmt: skip
    assert [m["leader"] for m in etcd["members"]] == [False, False, True]
    assert [m["db_size"] for m in etcd["members"]] == [20480, None, 3670016]
    assert [(x["subnet"], x["expires_in_s"], x["reservation"], x["stale"], x["error"])
            for x in doc["leases"]] == [
        ("172.21.23.0/24", 86340, False, False, ""),
        ("172.21.81.0/24", 3599, False, False, ""),
        ("172.21.89.0/24", -5, False, False, ""),
        ("172.21.90.0/24", None, True, True, ""),
        ("172.21.91.0-24", None, False, False, "not JSON: Expecting value"),
    ]  # fmt: skip
    assert doc["hosts"][2] == {
        "name": "node3", "agent_active": True, "agent_ready": True, "docker_active": True,
        "lease": "172.21.23.1/24", "docker0": "172.17.0.1/16", "bip_ok": False, "mtu": 1450,
        "missing_routes": ["172.21.81.0/24", "172.21.89.0/24"], "missing_fdb": [],
        "lease_in_etcd": True, "error": "",
    }  # fmt: skip
    assert [(h["name"], h["agent_active"], h["docker_active"], h["bip_ok"], h["error"])
            for h in doc["hosts"]] == [
        ("node1", True, True, True, ""),
        ("node2", False, False, True, ""),
        ("node3", True, True, False, ""),
        ("node4", False, False, False,
         "node4 (192.168.255.157): SSH port 22 unreachable: timed out"),
    ]  # fmt: skip


def test_status_healthy_only_when_etcd_and_every_host_are() -> None:
    status = ClusterStatus(
        [member("node1", 154, leader=True)], [], {"Network": "172.21.0.0/16"}, CONFIG
    )
    good = HostStatus("node1", agent_active=True, agent_ready=True, lease="172.21.81.1/24",
                      mtu=1450, docker0="172.21.81.1/24", docker_active=True)  # fmt: skip
    assert status_doc(status, [good])["healthy"] is True
    assert status_text(status, [good]).splitlines()[0] == "etcd: healthy"
    not_ready = HostStatus("node1", agent_active=True, lease="172.21.81.1/24", mtu=1450,
                           docker0="172.21.81.1/24", docker_active=True)  # fmt: skip
    assert status_doc(status, [not_ready])["healthy"] is False
    assert status_doc(status, [not_ready])["etcd"]["state"] == "healthy"


# --- status: etcd without quorum ----------------------------------------------------------------


def test_status_text_unavailable_with_an_etcd_error() -> None:
    status = ClusterStatus(
        [
            member("node1", 154),
            member("node2", 155, healthy=False, error="connect: connection refused"),
            member("node3", 156, healthy=False, error="dial tcp: i/o timeout"),
        ],
        errors=["cannot read /coreos.com/network/config: context deadline exceeded"],
    )
    head, rest, leases = status_text(status, []).split("\n\n")
    assert leases == "leases: (unknown: etcd did not answer)"
    verdict, table = head.split("\n", 1)
    assert verdict == "etcd: UNAVAILABLE: no quorum, 1 of 3 healthy"
    assert [row[1] for row in cells(table)] == ["healthy", "yes", "NO", "NO"]
    assert [row[6] for row in cells(table)] == [
        "error", "", "connect: connection refused", "dial tcp: i/o timeout",
    ]  # fmt: skip
    assert rest.splitlines() == [
        "network config: (unknown: etcd did not answer)",
        "etcd error: cannot read /coreos.com/network/config: context deadline exceeded",
    ]
    doc = status_doc(status, [])
    assert (doc["healthy"], doc["etcd"]["state"], doc["etcd"]["quorum"]) == (
        False, "unavailable", False,
    )  # fmt: skip
    assert doc["etcd"]["errors"] == status.errors and doc["network_config"] is None
    assert doc["leases"] is None  # unknown, not "none"


def test_status_text_when_no_member_answers() -> None:
    status = ClusterStatus(
        unreachable=["node1", "node2", "node3"],
        errors=["etcd member list failed: Error: context deadline exceeded"],
    )
    head, rest, leases = status_text(status, []).split("\n\n")
    assert leases == "leases: (unknown: etcd did not answer)"
    table = head.split("\n", 1)[1]
    assert cells(table)[1:] == [[name, "NO", "", "", "", "", "unreachable"]
                                for name in ("node1", "node2", "node3")]  # fmt: skip
    assert rest.splitlines() == [
        "network config: (unknown: etcd did not answer)",
        "etcd error: etcd member list failed: Error: context deadline exceeded",
    ]
    assert status_doc(status, [])["etcd"]["state"] == "unavailable"


def test_status_verdict_counts_unreachable_members() -> None:
    status = ClusterStatus(unreachable=["node1", "node2", "node3"], errors=["no answer"])
    assert status_text(status, []).splitlines()[0] == "etcd: UNAVAILABLE: no quorum, 0 of 3 healthy"


def test_status_text_absent_network_config() -> None:
    status = ClusterStatus([member("node1", 154, leader=True)])
    assert status_text(status, []).split("\n\n")[1] == "network config: (absent)"


# --- verify -------------------------------------------------------------------------------------


def three_hosts_one_untested() -> VerifyReport:
    """node3's container did not start; node1 -> node2 lost DF; node2 -> node1 lost the ping;
    node2's own ping had no summary line (ok without an RTT)."""
    return VerifyReport(
        hosts=["node1", "node2", "node3"],
        pairs=[
            PairResult("node1", "node1", True, 0.1, True),
            PairResult("node1", "node2", True, 0.134, False),
            PairResult("node2", "node1", False, None, False, "2 packets transmitted, 0 received"),
            PairResult("node2", "node2", True, None, True),
        ],
        hosts_failed={"node3": "verify: node3: image 'busybox' is not present (no --pull here)"},
    )


def test_verify_text_fail_df_fail_untested_cells() -> None:
    lines = verify_text(three_hosts_one_untested()).splitlines()
    assert cells("\n".join(lines[:5])) == [
        ["from \\ to", "node1", "node2", "node3"],
        ["node1", "0.10 ms", "0.13 ms, DF FAIL", "-"],
        ["node2", "FAIL", "ok", "-"],
        ["node3", "-", "-", "-"],
    ]
    assert lines[5:] == [
        "node3: FAILED verify: node3: image 'busybox' is not present (no --pull here)",
        "verify: 2/9 pairs ok, 5 not tested (each with a Don't-Fragment ping at the overlay MTU)"
        " -- FAILED",
        # node1 -> node2 failed its DF ping, node2 -> node1 its ping: one pair to look into
        "next: overlayctl doctor --pair node1,node2  (why node1 and node2 cannot reach each other)",
    ]
    assert verify_doc(three_hosts_one_untested())["next"] == [
        "overlayctl doctor --pair node1,node2"
    ]


def test_verify_text_all_ok() -> None:
    pairs = [PairResult(a, b, True, 0.05, True) for a in ("n1", "n2") for b in ("n1", "n2")]
    lines = verify_text(VerifyReport(hosts=["n1", "n2"], pairs=pairs)).splitlines()
    assert cells("\n".join(lines[:4]))[1:] == [["n1", "0.05 ms", "0.05 ms"],
                                               ["n2", "0.05 ms", "0.05 ms"]]  # fmt: skip
    assert lines[4:] == [
        "verify: 4/4 pairs ok (each with a Don't-Fragment ping at the overlay MTU)"
    ]


def test_verify_doc() -> None:
    doc = verify_doc(three_hosts_one_untested())
    assert (doc["ok"], doc["pairs_expected"], doc["pairs_untested"]) == (False, 9, 5)
    assert doc["pairs"][1:3] == [
        {"from": "node1", "to": "node2", "ok": True, "rtt_ms": 0.134, "mtu_ok": False,
         "error": ""},
        {"from": "node2", "to": "node1", "ok": False, "rtt_ms": None, "mtu_ok": False,
         "error": "2 packets transmitted, 0 received"},
    ]  # fmt: skip
    assert doc["hosts_failed"] == {
        "node3": "verify: node3: image 'busybox' is not present (no --pull here)"
    }


# --- plan ---------------------------------------------------------------------------------------

KEY = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB\n-----END PRIVATE KEY-----\n"


def a_plan() -> dict[str, HostPlan]:
    """node1: a file updated, a private key created, a file whose mode and owner are wrong,
    a package to install and a restart; node2: nothing to do."""
    hostname, key, conf = "/etc/hostname", "/etc/overlayctl/pki/client.key", "/etc/etcd/etcd.conf"
    files = [
        FileChange("prepare", hostname, DesiredFile(b"node1\n", 0o644, "root"),
                   RemoteFile(hostname, b"debian\n", 0o644, "root:root")),
        FileChange("pki", key, DesiredFile(KEY, 0o600, "root"), RemoteFile(key, None)),
        FileChange("etcd", conf, DesiredFile(b"A=1\n", 0o644, "root"),
                   RemoteFile(conf, b"A=1\n", 0o600, "etcd:etcd")),
    ]  # fmt: skip
    actions = [Action("packages", "install", "etcd-server"), Action("etcd", "restart", "etcd")]
    return {"node2": HostPlan("node2"), "node1": HostPlan("node1", files, actions)}


def test_plan_text() -> None:
    assert plan_text(a_plan()).splitlines() == [
        "=== node1: 5 changes",
        "--- prepare: update /etc/hostname",
        "--- a/etc/hostname",
        "+++ b/etc/hostname",
        "@@ -1 +1 @@",
        "-debian",
        "+node1",
        "--- pki: create /etc/overlayctl/pki/client.key",
        "# /etc/overlayctl/pki/client.key: private key created (content not shown)",
        "--- etcd: attributes /etc/etcd/etcd.conf",
        "# /etc/etcd/etcd.conf: mode 0600 -> 0644, owner etcd -> root",
        "--- packages: install etcd-server",
        "--- etcd: restart etcd",
        "=== node2: 0 changes",
    ]
    assert b"MC4CAQAw" not in plan_text(a_plan()).encode()


def test_plan_doc() -> None:
    doc = plan_doc(a_plan())
    assert doc["changes"] == 5
    assert list(doc["hosts"]) == ["node1", "node2"]
    assert doc["hosts"]["node2"] == {"changes": 0, "files": [], "actions": []}
    node1 = doc["hosts"]["node1"]
    assert node1["changes"] == 5
    assert node1["files"] == [
        {"phase": "prepare", "path": "/etc/hostname", "kind": "update",
         "diff": "--- a/etc/hostname\n+++ b/etc/hostname\n@@ -1 +1 @@\n-debian\n+node1\n"},
        {"phase": "pki", "path": "/etc/overlayctl/pki/client.key", "kind": "create",
         "diff": "# /etc/overlayctl/pki/client.key: private key created (content not shown)\n"},
        {"phase": "etcd", "path": "/etc/etcd/etcd.conf", "kind": "attributes",
         "diff": "# /etc/etcd/etcd.conf: mode 0600 -> 0644, owner etcd -> root\n"},
    ]  # fmt: skip
    assert node1["actions"] == [
        {"phase": "packages", "kind": "install", "target": "etcd-server"},
        {"phase": "etcd", "kind": "restart", "target": "etcd"},
    ]
