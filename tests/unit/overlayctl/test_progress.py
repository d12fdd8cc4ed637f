"""Long waits say what they wait for, every interval, and leave no thread behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from overlayctl.etcd import cluster as etcd_cluster
from overlayctl.etcd import etcdctl
from overlayctl.remote.heartbeat import Heartbeat
from overlayctl.remote.session import Reporter
from overlayctl.remote.ssh import Remote, SshTarget

TICK = 0.05  # the heartbeat interval in these tests (10 s in real runs)


def heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heartbeat")]


@pytest.fixture
def lines() -> list[tuple[str | None, str]]:
    return []


@pytest.fixture
def remote(tmp_path: Path, lines: list[tuple[str | None, str]]) -> Remote:
    """A Remote that is never connected: the tests replace its one exec channel."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = SshTarget(name="node1", address="127.0.0.1", known_hosts=known, port=1)
    return Remote(target, progress=lambda phase, line: lines.append((phase, line)), heartbeat=TICK)


def slow_exec(seconds: float, code: int = 0):  # type: ignore[no-untyped-def]
    def fake(_command: str, _stdin: bytes | None, _timeout: float | None) -> tuple[int, str, str]:
        time.sleep(seconds)
        return code, "out", ""

    return fake


def test_heartbeat_reports_every_interval_and_stops_with_the_block() -> None:
    seen: list[str] = []
    with Heartbeat("etcd to start on node1", seen.append, interval=TICK) as beat:
        time.sleep(TICK * 3.5)
        beat.what = "etcd on node2 to be healthy"
        time.sleep(TICK * 2)
    count = len(seen)
    time.sleep(TICK * 2)
    assert len(seen) == count  # nothing after the block
    assert 2 <= count <= 6  # 5.5 intervals
    assert seen[0] == "still waiting for etcd to start on node1 (0 s so far)"
    assert seen[-1] == "still waiting for etcd on node2 to be healthy (0 s so far)"
    assert heartbeats() == []


def test_a_short_wait_is_silent_and_ends_at_once() -> None:
    seen: list[str] = []
    started = time.monotonic()
    with Heartbeat("docker to restart", seen.append):  # the real 10 s interval
        pass
    assert time.monotonic() - started < 0.5  # the thread is woken, not waited out
    assert seen == []
    assert heartbeats() == []


def test_a_broken_progress_sink_does_not_break_the_wait() -> None:
    def broken(_line: str) -> None:
        raise BrokenPipeError

    with Heartbeat("x", broken, interval=TICK / 5):
        time.sleep(TICK)
    assert heartbeats() == []


def test_a_slow_command_says_what_it_waits_for(
    remote: Remote, lines: list[tuple[str | None, str]]
) -> None:
    remote._exec = slow_exec(TICK * 3.5)  # type: ignore[method-assign]
    before = threading.active_count()
    out = remote.run(["systemctl", "restart", "etcd"], waiting_for="etcd to start on node1")
    assert out.stdout == "out"
    assert threading.active_count() == before
    assert heartbeats() == []
    assert 1 <= len(lines) <= 4  # 3.5 intervals
    assert set(lines) == {(None, "still waiting for etcd to start on node1 (0 s so far)")}


def test_without_a_label_the_command_is_named(
    remote: Remote, lines: list[tuple[str | None, str]]
) -> None:
    remote._exec = slow_exec(TICK * 2.5)  # type: ignore[method-assign]
    remote.run(["systemctl", "restart", "docker"])
    assert lines[0] == (None, "still waiting for `systemctl restart docker` (0 s so far)")


def test_a_failing_slow_command_leaves_no_thread(remote: Remote) -> None:
    def times_out(*_args: object) -> tuple[int, str, str]:
        time.sleep(TICK * 2)
        raise TimeoutError

    remote._exec = times_out  # type: ignore[method-assign]
    with pytest.raises(Exception, match="did not finish"):
        remote.run(["sleep", "1000"], timeout=0.1)
    assert heartbeats() == []


def test_commands_inside_a_wait_do_not_add_lines_of_their_own(
    remote: Remote, lines: list[tuple[str | None, str]]
) -> None:
    remote._exec = slow_exec(TICK * 1.5)  # type: ignore[method-assign]
    with remote.waiting("etcd to be healthy", phase="etcd"):
        remote.run(["etcdctl", "endpoint", "health"])
        remote.run(["etcdctl", "endpoint", "health"])
    assert lines and {phase for phase, _ in lines} == {"etcd"}
    assert all("etcd to be healthy" in line for _, line in lines)
    assert heartbeats() == []


def test_wait_healthy_names_the_members_still_missing(
    remote: Remote, lines: list[tuple[str | None, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    polls = iter([False, False, False, True])

    def health(
        _remote: Remote, _inv: object, _endpoints: object = None
    ) -> dict[str, etcdctl.EndpointHealth]:
        ok = next(polls)
        return {
            "node1": etcdctl.EndpointHealth("https://10.0.0.1:2379", True, ""),
            "node2": etcdctl.EndpointHealth("https://10.0.0.2:2379", ok, ""),
        }

    real_sleep = time.sleep
    monkeypatch.setattr(etcd_cluster, "health", health)
    monkeypatch.setattr(etcd_cluster.time, "sleep", lambda _s: real_sleep(TICK * 1.5))
    etcd_cluster.wait_healthy(remote, None, timeout=30)  # type: ignore[arg-type]
    assert lines
    assert lines[-1] == ("etcd", "still waiting for etcd on node2 to be healthy (0 s so far)")
    assert heartbeats() == []


def test_the_session_reporter_prints_host_phase_and_wait() -> None:
    said: list[str] = []
    reporter = Reporter(None, echo=said.append)
    reporter.phase = "agent"
    progress = reporter.host_progress("node1")
    progress("etcd", "still waiting for etcd to be healthy (20 s so far)")
    progress(None, "still waiting for overlay-agent's /readyz to answer (10 s so far)")
    assert said == [
        "node1        etcd      still waiting for etcd to be healthy (20 s so far)",
        "node1        agent     still waiting for overlay-agent's /readyz to answer (10 s so far)",
    ]
