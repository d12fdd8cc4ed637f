"""A per-host lock so that two overlayctl runs never change one host at the same time.

The lock is a directory (mkdir is atomic) holding a description of its holder. A second run is
refused with the holder named; a lock left by a killed run is removed only when asked. The
script takes it only as root, so a login that cannot act as root never leaves one behind (the
root check says why: see root.py).

It lives in /run/overlayctl/, a folder the script makes root's own with mode 0700, not in the
world-writable /run/lock: there any local user could create the lock with a made-up holder and
block every run. A folder of that name that is not root's 0700 one is refused, never used; a
lock another user made at the old place is simply not looked at.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time

from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Command, Remote, RunResult, command_of

LOCK_DIR = "/run/overlayctl/lock"
TAKE = HostScript("lock-take.sh", label="script")
RELEASE = HostScript("lock-release.sh", label="script")
_HELD, _NOT_ROOT, _UNSAFE = 3, 5, 6  # lock-take.sh's exit codes


def holder_description(command: str) -> dict[str, object]:
    return {
        "command": command,
        "user": getpass.getuser(),
        "workstation": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "token": os.urandom(8).hex(),
    }


class HostLock:
    """Take with acquire() (or run take() in a batch, then settle() its result); give back with
    release(). `break_stale` removes any holder first."""

    def __init__(self, remote: Remote, command: str, lock_dir: str = LOCK_DIR) -> None:
        self.remote = remote
        self.lock_dir = lock_dir
        self.holder = holder_description(command)
        self.held = False

    def take(self, break_stale: bool = False) -> Command:
        """The command that takes the lock, for Remote.run or a batch."""
        holder = json.dumps(self.holder)
        return command_of(TAKE, self.lock_dir, holder, "yes" if break_stale else "no")

    def settle(self, result: RunResult) -> None:
        """Held after TAKE's RESULT, or Conflict naming the holder."""
        if result.code == 0:
            self.held = True
            return
        if result.code != _HELD:
            why = "not root" if result.code == _NOT_ROOT else (result.stderr.strip() or "?")
            if result.code == _UNSAFE:
                raise Conflict(f"{self.remote.target.name}: {why.splitlines()[-1]}")
            raise OverlayctlError(
                f"{self.remote.target.name}: cannot take {self.lock_dir}: {why.splitlines()[-1]}"
            )
        try:
            other = json.loads(result.stdout or "{}")
        except json.JSONDecodeError:
            other = {}
        who = (
            f"`{other.get('command', '?')}` by {other.get('user', '?')}@"
            f"{other.get('workstation', '?')} (pid {other.get('pid', '?')}) "
            f"since {other.get('since', '?')}"
        )
        raise Conflict(
            f"{self.remote.target.name}: locked by {who}; if that run is dead, "
            "re-run with --break-lock"
        )

    def acquire(self, break_stale: bool = False) -> None:
        argv, label = self.take(break_stale)
        self.settle(self.remote.run(argv, check=False, log_as=label))

    def release(self) -> None:
        if self.held:
            self.remote.script(RELEASE, self.lock_dir, str(self.holder["token"]), check=False)
            self.held = False
