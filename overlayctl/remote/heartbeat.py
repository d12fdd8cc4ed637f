"""A progress line every few seconds while something slow runs, so no long wait is silent.

An operator watching `init` cannot tell a host that takes a minute to restart etcd from a hung
run; one line every 10 s saying what is awaited and for how long settles that. One mechanism
serves every wait: `Remote.run` wraps each remote command in a Heartbeat, and local poll loops
(etcd's health wait) wrap themselves in one through `Remote.waiting`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

INTERVAL = 10.0  # seconds between two progress lines of one wait


class Heartbeat:
    """Calls REPORT("still waiting for WHAT (N s so far)") every INTERVAL s until the block ends.

    The thread exists only inside the `with` block and is joined when it ends, so nothing
    outlives the wait it reports on. WHAT may be changed meanwhile (a poll loop naming what is
    still missing). Without REPORT, or with INTERVAL <= 0, it is silent and starts no thread.
    """

    def __init__(
        self, what: str, report: Callable[[str], None] | None, interval: float = INTERVAL
    ) -> None:
        self.what = what
        self._report = report
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> Heartbeat:
        self._started = time.monotonic()
        if self._report is not None and self._interval > 0:
            self._thread = threading.Thread(
                target=self._beat, args=(self._report,), name=f"heartbeat: {self.what}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self, report: Callable[[str], None]) -> None:
        while not self._stop.wait(self._interval):
            elapsed = time.monotonic() - self._started
            try:
                report(f"still waiting for {self.what} ({elapsed:.0f} s so far)")
            except Exception:  # a broken progress sink must not break the wait it reports on
                return
