"""Closing a session releases every host's lock: the cluster's (the first taken) last, the
others at once; a release that fails is logged, never raised, and the rest still go."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from overlayctl.inventory import parse_inventory
from overlayctl.remote.session import Reporter, RunOptions, Session

NAMES = [f"n{i}" for i in range(1, 7)]


class Lock:
    def __init__(self, name: str, log: list[tuple[str, float, float]], fails: bool = False):
        self.name, self.log, self.fails = name, log, fails
        self.guard = threading.Lock()

    def release(self) -> None:
        started = time.monotonic()
        time.sleep(0.05)
        with self.guard:
            self.log.append((self.name, started, time.monotonic()))
        if self.fails:
            raise OSError("connection gone")


def session(lines: list[str]) -> Session:
    hosts = [{"name": n, "address": f"192.0.2.{i}"} for i, n in enumerate(NAMES, 1)]
    doc = {"cluster": {"name": "c", "network": "172.21.0.0/16"}, "hosts": hosts}
    inv = parse_inventory(doc, base_dir=Path("/x"))[0]
    return Session(inv, Reporter(None, echo=lines.append), RunOptions(), "init")


def test_the_cluster_lock_goes_last_the_others_together() -> None:
    log: list[tuple[str, float, float]] = []
    s = session([])
    s.locks = {n: Lock(n, log) for n in NAMES}  # type: ignore[misc]
    s.close()
    assert s.locks == {} and sorted(n for n, _, _ in log) == sorted(NAMES)
    first = next(entry for entry in log if entry[0] == "n1")
    others = [entry for entry in log if entry[0] != "n1"]
    assert all(end <= first[1] for _, _, end in others)  # n1 after every other one
    # five releases of 0.05 s each took far less than 0.25 s: they ran together
    assert max(end for _, _, end in others) - min(start for _, start, _ in others) < 0.2


def test_a_failed_release_is_logged_and_the_others_still_go() -> None:
    log: list[tuple[str, float, float]] = []
    s = session([])
    said: list[str] = []
    s.reporter.log = said.append  # type: ignore[method-assign]
    s.locks = {n: Lock(n, log, fails=n == "n3") for n in NAMES}  # type: ignore[misc]
    s.close()
    assert sorted(n for n, _, _ in log) == sorted(NAMES)
    assert said == ["n3: lock release failed: connection gone"]
