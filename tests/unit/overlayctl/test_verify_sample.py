"""`verify --sample K`: the pure choice of peers, its coverage over rounds, and how a sampled
run is reported (the pairs left out are untested, never passed)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayctl.actions import verify
from overlayctl.actions.verify import PairResult, VerifyOptions, VerifyReport
from overlayctl.output import verify_doc, verify_text
from tests.unit.overlayctl.test_verify_report import FakeSession, overlay_hosts


def names(n: int) -> list[str]:
    return [f"node{i}" for i in range(1, n + 1)]


@given(n=st.integers(2, 70), k=st.integers(1, 80), round_=st.integers(0, 10_000))
def test_each_host_pings_itself_then_k_distinct_others(n: int, k: int, round_: int) -> None:
    hosts = names(n)
    chosen = verify.sample_peers(hosts, k, round_)
    assert list(chosen) == hosts
    for host, peers in chosen.items():
        assert peers[0] == host  # the diagonal: its own docker0, always
        others = peers[1:]
        assert host not in others
        assert len(set(others)) == len(others) == min(k, n - 1)


@given(n=st.integers(2, 70), k=st.integers(1, 80), start=st.integers(0, 10_000))
def test_consecutive_rounds_cover_every_pair(n: int, k: int, start: int) -> None:
    hosts = names(n)
    covered: set[tuple[str, str]] = set()
    for round_ in range(start, start + verify.rounds_to_cover(n, k)):
        covered |= {(a, b) for a, peers in verify.sample_peers(hosts, k, round_).items()
                    for b in peers}  # fmt: skip
    assert covered == set(itertools.product(hosts, repeat=2))


def test_fewer_rounds_than_needed_leave_pairs_out() -> None:
    """The coverage bound is tight: 24 peers at 3 a round need 8 rounds, 7 are not enough."""
    hosts = names(25)
    assert verify.rounds_to_cover(25, 3) == 8
    covered = {(a, b) for r in range(7) for a, ps in verify.sample_peers(hosts, 3, r).items()
               for b in ps}  # fmt: skip
    assert len(covered) < 25 * 25


def test_rounds_rotate_the_peers() -> None:
    hosts = names(6)
    assert verify.sample_peers(hosts, 2, 0)["node1"] == ["node1", "node2", "node3"]
    assert verify.sample_peers(hosts, 2, 1)["node1"] == ["node1", "node4", "node5"]
    assert verify.sample_peers(hosts, 2, 2)["node1"] == ["node1", "node2", "node6"]
    assert verify.sample_peers(hosts, 2, 0)["node6"] == ["node6", "node1", "node2"]


@pytest.mark.parametrize("k", [5, 9])
def test_k_of_n_minus_one_or_more_is_every_peer(k: int) -> None:
    hosts = names(6)
    chosen = verify.sample_peers(hosts, k, 3)
    assert {h: sorted(peers) for h, peers in chosen.items()} == {h: hosts for h in hosts}


def test_a_sampled_run_pings_only_its_peers_and_reports_the_rest_untested() -> None:
    hosts = overlay_hosts(4)
    options = VerifyOptions(sample=1, sample_round=2)
    report = verify.run_verify(FakeSession(hosts), options)
    # round 2 of K=1 over 4 hosts: offset 1 + (2 % 3) = 3, so n1 -> n4, n2 -> n1, ...
    assert [(p.src, p.dst) for p in report.pairs] == [
        ("n1", "n1"), ("n1", "n4"), ("n2", "n2"), ("n2", "n1"),
        ("n3", "n3"), ("n3", "n2"), ("n4", "n4"), ("n4", "n3"),
    ]  # fmt: skip
    pinged = {c[-1] for c in hosts[0].calls if "ping" in c}
    assert pinged == {"172.21.1.1", "172.21.4.2"}  # its docker0 and n4's container only
    assert (report.expected, report.passed, report.untested, report.ok) == (8, 8, 0, True)
    assert len(report.untested_pairs) == 16 - 8
    doc = verify_doc(report)
    assert (doc["sampled"], doc["sample_round"], doc["pairs_expected"]) == (1, 2, 8)
    assert {"from": "n1", "to": "n2"} in doc["untested"]
    assert all(p["ok"] for p in doc["pairs"]) and len(doc["pairs"]) == 8
    text = verify_text(report)
    assert "8/8 sampled pairs ok" in text and "8 other pairs not tested in this run" in text
    assert "every pair in 3 rounds" in text
    n1_row = next(line for line in text.splitlines() if line.startswith("n1 "))
    assert n1_row.split()[1:] == ["0.13", "ms", "-", "-", "0.13", "ms"]


def test_a_full_run_lists_no_untested_pair_and_is_not_sampled() -> None:
    report = VerifyReport(hosts=["a", "b"], pairs=[
        PairResult(s, d, True, 0.1, True) for s, d in itertools.product("ab", repeat=2)
    ])  # fmt: skip
    doc = verify_doc(report)
    assert (doc["sampled"], doc["sample_round"], doc["untested"]) == (None, None, [])
    assert "sampled" not in verify_text(report)
