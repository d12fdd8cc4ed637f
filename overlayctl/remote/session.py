"""A run against a cluster's hosts: connections (and locks) per host, phases run in parallel,
and a progress/log reporter. Hosts that fail a phase leave the run; the others go on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from overlayctl.errors import EnvironmentProblem, OverlayctlError
from overlayctl.inventory.model import Host, Inventory
from overlayctl.remote.group import GroupResult, HostFailure, run_on_hosts
from overlayctl.remote.lock import HostLock
from overlayctl.remote.root import ID_U, why_not_root
from overlayctl.remote.ssh import Remote, RunResult, SshTarget

T = TypeVar("T")


class Reporter:
    """Progress lines for the operator, and every line plus every remote command in a log file."""

    def __init__(self, log_path: Path | None, echo: Callable[[str], None] = print) -> None:
        self.log_path = log_path
        self.echo = echo
        self.phase = "connect"  # the phase running now, for lines that do not name their own
        self._started = time.monotonic()
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        else:
            self._log = None

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(f"{time.monotonic() - self._started:8.2f} {line}\n")

    def say(self, line: str) -> None:
        self.echo(line)
        self.log(line)

    def host(self, host: str, phase: str, message: str) -> None:
        self.say(f"{host:<12} {phase:<9} {message}")

    def host_progress(self, host: str) -> Callable[[str | None, str], None]:
        """HOST's progress lines about long waits (see Remote); PHASE None: the run's phase."""
        return lambda phase, message: self.host(host, phase or self.phase, message)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class RunOptions:
    accept_new_host_keys: bool = False
    record_host_keys: bool = True  # False: accepted new keys are trusted for this run only (plan)
    parallel: int = 10
    break_lock: bool = False


@dataclass
class Session:
    inv: Inventory
    reporter: Reporter
    options: RunOptions
    command: str
    lock: bool = True
    remotes: dict[str, Remote] = field(default_factory=dict)
    locks: dict[str, HostLock] = field(default_factory=dict)
    failures: list[HostFailure] = field(default_factory=list)

    def target(self, host: Host) -> SshTarget:
        ssh = self.inv.ssh
        return SshTarget(
            name=host.name, address=str(host.address), known_hosts=ssh.known_hosts,
            user=ssh.user, port=ssh.port, key=ssh.key, sudo=ssh.sudo,
            jump=(ssh.jump.user or ssh.user, ssh.jump.host, ssh.jump.port) if ssh.jump else None,
        )  # fmt: skip

    @property
    def alive(self) -> list[Host]:
        """Hosts still in the run (connected and not failed)."""
        return [h for h in self.inv.hosts if h.name in self.remotes]

    def open(self) -> None:
        """Connect (and lock) every host; the ones that fail are reported and left out.

        The first reachable host's lock is taken alone, before any other: it is the cluster's
        lock. Of two runs started together, the second is then refused there and touches
        nothing, instead of both holding some hosts and both failing. Every host must let the
        login act as root first: one that does not stops the run (exit 3), leaving no lock.
        """

        def connect(host: Host) -> Remote:
            remote = Remote(
                self.target(host), self.options.accept_new_host_keys, log=self.reporter.log,
                progress=self.reporter.host_progress(host.name),
                record_host_keys=self.options.record_host_keys,
            )  # fmt: skip
            remote.connect()
            return remote

        self.reporter.phase = "connect"
        result = run_on_hosts("connect", self.inv.hosts, connect, _name, self.options.parallel)
        self.remotes.update(result.succeeded)
        self._drop_failed(result)
        if not self.alive:
            return
        first = self.alive[0]
        # One round trip: every host's root check, and with the first one's, the cluster's lock.
        lock = HostLock(self.remotes[first.name], self.command) if self.lock else None
        checked = self.each("connect", lambda h, r: self._check_root(r, lock, h is first))
        problems = [why for why, _ in checked.succeeded.values() if why]
        taken = checked.succeeded.get(first.name, (None, None))[1]
        if lock is not None and taken is not None:
            if problems:
                if taken.code == 0:  # taken, but another host stops the run: give it back
                    lock.held = True
                    lock.release()
            else:
                self._settle(first, lock, taken)
        if problems:
            self.close()
            raise EnvironmentProblem("; ".join(problems))
        if not self.lock:
            return
        todo = [h for h in self.alive if h.name not in self.locks]
        if todo and not self.locks:  # the first host left the run: the next one's lock first
            self._settle(todo[0], HostLock(self.remotes[todo[0].name], self.command), None)
            todo = todo[1:]
        self.each("lock", self._lock, todo)

    def _settle(self, host: Host, lock: HostLock, taken: RunResult | None) -> None:
        """HOST's LOCK held (TAKEN: the result of taking it already), or the run ends here."""
        try:
            if taken is None:
                lock.acquire(self.options.break_lock)
            else:
                lock.settle(taken)
        except OverlayctlError:
            self.close()
            raise
        self.locks[host.name] = lock

    def _check_root(
        self, remote: Remote, lock: HostLock | None, first: bool
    ) -> tuple[str | None, RunResult | None]:
        """Why this login cannot act as root here (None: it can) and, with LOCK (the first
        host's), the result of taking it in the same round trip (the script takes it only as
        root). Asked before any other lock or any phase: every later step would fail in ways
        that read like cluster states."""
        if lock is None or not first:
            argv, label = ID_U
            got = remote.run(argv, check=False, timeout=30, log_as=label)
            return why_not_root(remote.target, got), None
        root, taken = remote.batch([ID_U, lock.take(self.options.break_lock)], timeout=60)
        return why_not_root(remote.target, root), taken

    def _lock(self, host: Host, remote: Remote) -> None:
        lock = HostLock(remote, self.command)
        lock.acquire(break_stale=self.options.break_lock)
        self.locks[host.name] = lock

    def each(
        self,
        phase: str,
        fn: Callable[[Host, Remote], T],
        hosts: list[Host] | None = None,
        parallel: int | None = None,
    ) -> GroupResult[T]:
        """FN(host, remote) on every live host (or HOSTS), in parallel; failures leave the run.
        PARALLEL overrides --parallel where the hosts must work at once (doctor's probes)."""
        todo = [h for h in (hosts if hosts is not None else self.alive) if h.name in self.remotes]
        self.reporter.phase = phase
        result = run_on_hosts(
            phase,
            todo,
            lambda h: fn(h, self.remotes[h.name]),
            _name,
            parallel or self.options.parallel,
        )
        self._drop_failed(result)
        return result

    def fail(self, host: str, phase: str, error: str) -> None:
        self._drop_failed(GroupResult(phase, failed={host: HostFailure(host, phase, error)}))

    def _drop_failed(self, result: GroupResult) -> None:
        for name, failure in result.failed.items():
            self.failures.append(failure)
            self.reporter.host(name, failure.phase, f"FAILED: {failure.error}")
            remote = self.remotes.pop(name, None)
            self._release(name)
            if remote is not None:
                remote.close()

    def _release(self, name: str) -> None:
        lock = self.locks.pop(name, None)
        if lock is not None:
            try:
                lock.release()
            except Exception as exc:  # the connection may be gone; say so, never hide it
                self.reporter.log(f"{name}: lock release failed: {exc}")

    def close(self) -> None:
        """Release every lock, the cluster's (the first taken) last, so that a run started
        meanwhile is refused there rather than finding some hosts free; the others at once
        (one round trip each: one after another, 25 hosts' took most of a second)."""
        first, *others = list(self.locks) or [None]
        run_on_hosts("unlock", others, self._release, str, self.options.parallel)
        if first is not None:
            self._release(first)
        for remote in self.remotes.values():
            remote.close()
        self.remotes.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name(host: Host) -> str:
    return host.name
