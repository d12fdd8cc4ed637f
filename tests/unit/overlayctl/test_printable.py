"""What etcd or a host says never reaches the operator's terminal as a control sequence
(issue #17 item 11): a hostile lease's BackendType, a member's error, a host's error and a
file's old content in a plan diff are shown as characters; the JSON documents stay exact.
"""

from __future__ import annotations

import json
import re

import pytest

from overlayctl.actions.status import HostStatus
from overlayctl.actions.verify import PairResult, VerifyReport
from overlayctl.etcd.cluster import ClusterStatus, LeaseInfo, MemberStatus
from overlayctl.output import plan_text, status_doc, status_text, verify_text
from overlayctl.plan.changes import DesiredFile, FileChange, HostPlan
from overlayctl.plan.facts import RemoteFile
from overlayctl.text import printable

# clear the screen, retitle the window, a C1 CSI, a bell, a backspace, a right-to-left override
HOSTILE = "\x1b[2J\x1b]0;owned\x07vx\x9b31m\x08lan\x07\u202e\x00"
# what a terminal would act on: any C0 but newline, DEL, C1, the bidi overrides
ACTIVE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_status() -> tuple[ClusterStatus, list[HostStatus]]:
    members = [
        MemberStatus("node1", ["https://192.168.255.154:2380"], ["https://192.168.255.154:2379"],
                     False, error=f"dial: {HOSTILE}"),
    ]  # fmt: skip
    parsed = {"Network": "172.21.0.0/16", "Backend": {"Type": HOSTILE}}
    config = '{"Network":"172.21.0.0/16","Backend":{"Type":"' + HOSTILE + '"}}'  # as stored
    leases = [LeaseInfo("172.21.81.0/24", "192.168.255.154", HOSTILE, 3600, "node1")]
    hosts = [HostStatus("node1", error=f"agent says {HOSTILE}\nsecond line")]
    return ClusterStatus(members, [], parsed, config, leases), hosts


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, "vx31mlan"),
        ("ok\ttab\nline", "ok\ttab\nline"),
        ("\x1b", ""),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # an OSC 8 hyperlink, ST-ended
        ("naïve 名前", "naïve 名前"),  # printable text of any script stays
    ],
)
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(raw, lines=False) == shown.replace("\t", " ").replace("\n", " ")


def test_status_text_shows_a_hostile_lease_as_characters() -> None:
    text = status_text(*hostile_status())
    assert not ACTIVE.search(text.replace("\n", "")), repr(text)
    lease_row = next(line for line in text.splitlines() if line.startswith("172.21.81.0/24"))
    assert "vx31mlan" in lease_row  # the cell, on the lease's own line
    assert '"Type":"vx31mlan"' in text  # the network config line
    assert "dial: vx31mlan" in text  # the member's error
    assert "agent says vx31mlan second line" in text  # a host's error, kept on its row


def test_status_json_keeps_the_exact_strings() -> None:
    status, hosts = hostile_status()
    doc = json.loads(json.dumps(status_doc(status, hosts)))
    assert doc["leases"][0]["backend"] == HOSTILE
    assert doc["hosts"][0]["error"] == f"agent says {HOSTILE}\nsecond line"
    assert "\x1b" not in json.dumps(status_doc(status, hosts))  # escaped as \u001b


def test_plan_diff_and_verify_text_are_printable() -> None:
    plan = HostPlan("node1")
    want = DesiredFile(b"127.0.0.1 localhost\n", 0o644, "root")
    plan.files.append(
        FileChange(
            "prepare",
            "/etc/hosts",
            want,
            RemoteFile("/etc/hosts", HOSTILE.encode(), 0o644, "root:root"),
        )
    )
    text = plan_text({"node1": plan})
    assert "-vx31mlan" in text and not ACTIVE.search(text.replace("\n", ""))
    report = VerifyReport(
        pairs=[PairResult("node1", "node2", False, None, False, error=HOSTILE)],
        hosts=["node1", "node2"],
        hosts_failed={"node2": f"ssh: {HOSTILE}"},
    )
    text = verify_text(report)
    assert "node2: FAILED ssh: vx31mlan" in text and not ACTIVE.search(text.replace("\n", ""))
