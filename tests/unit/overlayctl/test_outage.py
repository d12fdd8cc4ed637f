"""adopt's outage measurement: the container list, ping -D -O logs, silences and the verdict
(plan/outage.py), and the probe script's own start/stop on 127.0.0.1."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from overlayctl.phases.adopt_outage import PROBE, _split_logs
from overlayctl.plan.outage import (
    Container,
    PingLog,
    judge,
    longest_silence,
    overlapping,
    parse_containers,
    parse_ping_log,
)

LOG = """PING 172.21.31.2 (172.21.31.2) 56(84) bytes of data.
[100.0] 64 bytes from 172.21.31.2: icmp_seq=1 ttl=63 time=0.5 ms
[100.2] 64 bytes from 172.21.31.2: icmp_seq=2 ttl=63 time=0.5 ms
[101.2] no answer yet for icmp_seq=3
[101.4] no answer yet for icmp_seq=4
[103.2] 64 bytes from 172.21.31.2: icmp_seq=13 ttl=63 time=0.6 ms
[103.4] 64 bytes fr"""


def test_ping_log_reads_replies_and_misses_and_skips_a_cut_line() -> None:
    log = parse_ping_log("172.21.31.2", LOG)
    assert log.replies == [100.0, 100.2, 103.2]
    assert log.missed == 2 and log.sent == 5


def test_longest_silence_is_between_replies_or_at_the_edges() -> None:
    log = parse_ping_log("x", LOG)
    middle = longest_silence(log, 99.9, 103.5)
    assert (round(middle.seconds, 3), middle.since, middle.until) == (3.0, 100.2, 103.2)
    tail = longest_silence(log, 99.9, 110.0)  # nothing came back after 103.2
    assert (round(tail.seconds, 3), tail.since, tail.until) == (6.8, 103.2, 110.0)
    silent = longest_silence(PingLog("x"), 5.0, 9.0)
    assert (silent.seconds, silent.since, silent.until) == (4.0, 5.0, 9.0)


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=40), st.floats(0, 50))
def test_longest_silence_is_never_shorter_than_any_gap(replies: list[float], start: float) -> None:
    end = start + 50
    log = PingLog("x", sorted(replies))
    inside = sorted(t for t in replies if start <= t <= end)
    marks = [start, *inside, end]
    silence = longest_silence(log, start, end)
    assert silence.seconds == max(b - a for a, b in itertools.pairwise(marks))
    assert start <= silence.since <= silence.until <= end


def test_containers_without_address_are_left_out() -> None:
    text = (
        "abc /app 4242 2026-12-03T07:00:00Z always 172.21.31.2\n"
        "def /solo 4343 2026-12-03T07:00:01Z no 172.21.31.3\n"
        "ghi /hostnet 4444 2026-12-03T07:00:02Z no -\n"
        "garbage line\n"
    )
    got = parse_containers(text)
    assert [(c.name, c.pid, c.restart_policy, c.ip) for c in got] == [
        ("app", 4242, "always", "172.21.31.2"),
        ("solo", 4343, "no", "172.21.31.3"),
    ]


def _c(name: str, started: str, cid: str = "") -> Container:
    return Container(cid or name, name, 1, started, "no", "172.21.1.2")


def test_judge_tells_kept_restarted_and_gone_and_the_worst_peer() -> None:
    before = [_c("app", "t0"), _c("solo", "t0"), _c("web", "t0")]
    after = [_c("app", "t0"), _c("solo", "t1")]
    logs = {
        "node1": [PingLog("a", [10.0, 10.2, 10.4, 19.0])],
        "node3": [PingLog("a", [10.0, 11.0, 19.0])],
    }
    out = judge("node2", before=before, after=after, logs=logs, start=10.0, end=19.0)
    assert (out.kept, out.restarted, out.gone) == (["app"], ["solo"], ["web"])
    assert (out.longest_s, out.seen_from, out.since, out.until) == (8.6, "node1", 10.4, 19.0)
    assert out.line() == (
        "node2: containers kept 1, restarted 1, gone 1; longest silence 8.6 s "
        "(from node1; restarted: solo; gone: web)"
    )


def test_overlapping_outages_are_named_short_ones_ignored() -> None:
    def outage(host: str, seconds: float, since: float):
        replies = [0.0, since, since + seconds, 100.0]
        return judge(host, before=[], after=[], logs={"p": [PingLog("x", replies)]}, start=0.0,
                     end=100.0)  # fmt: skip

    one, two = outage("node1", 40.0, 10.0), outage("node2", 40.0, 30.0)
    three = outage("node3", 50.0, 50.0)
    assert overlapping([one, two, three]) == [("node1", "node2", 20.0), ("node2", "node3", 20.0)]
    steady = {"p": [PingLog("x", [i * 0.2 for i in range(501)])]}
    short = judge("node4", before=[], after=[], logs=steady, start=0, end=100)
    assert overlapping([one, short]) == []


def test_probe_script_starts_and_stops_pings_on_loopback(tmp_path) -> None:
    """The real script, as a host runs it (sh, ping, timeout, setsid): two probes to 127.0.0.1,
    stopped by PID, their logs read back and the folder removed."""
    folder = tmp_path / "probe"
    started = time.time()
    subprocess.run(PROBE.argv("start", str(folder), "30", "127.0.0.1", "127.0.0.1"), check=True)
    pids = [int((folder / f"{n}.pid").read_text()) for n in (0, 1)]
    time.sleep(1.0)
    got = subprocess.run(PROBE.argv("stop", str(folder), "MARK"), check=True,
                         capture_output=True, text=True)  # fmt: skip
    logs = _split_logs(got.stdout, "MARK")
    assert [log.target for log in logs] == ["127.0.0.1", "127.0.0.1"]
    for log in logs:
        assert len(log.replies) >= 3, got.stdout
        assert longest_silence(log, started, time.time()).seconds < 1.0
    assert not folder.exists()
    for pid in pids:  # every probe ended with its stop
        assert _ended(pid)


def _ended(pid: int) -> bool:
    """PID is gone or a zombie (this machine's PID 1 does not always reap orphans)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status
