"""A per-host lock so that two overlayctl runs never change one host at the same time.

The lock is a directory (mkdir is atomic) holding a description of its holder. A second run is
refused with the holder named; a lock left by a killed run is removed only when asked.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time

from overlayctl.errors import Conflict
from overlayctl.remote.ssh import Remote

LOCK_DIR = "/var/lock/overlayctl.lock"

# $1 lock dir, $2 holder JSON. Exit 0: taken. Exit 3: held (holder on stdout).
_TAKE = r"""
if mkdir "$1" 2>/dev/null; then
  printf '%s\n' "$2" > "$1/holder"
  exit 0
fi
cat "$1/holder" 2>/dev/null || echo '{}'
exit 3
"""

# $1 lock dir, $2 our token: remove only our own lock.
_RELEASE = r"""
grep -qF "$2" "$1/holder" 2>/dev/null && rm -rf "$1"
exit 0
"""


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
    """Take with acquire(); give back with release(). `break_stale` removes any holder first."""

    def __init__(self, remote: Remote, command: str, lock_dir: str = LOCK_DIR) -> None:
        self.remote = remote
        self.lock_dir = lock_dir
        self.holder = holder_description(command)
        self.held = False

    def acquire(self, break_stale: bool = False) -> None:
        if break_stale:
            self.remote.run(["rm", "-rf", self.lock_dir])
        result = self.remote.script(_TAKE, self.lock_dir, json.dumps(self.holder), check=False)
        if result.code == 0:
            self.held = True
            return
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

    def release(self) -> None:
        if self.held:
            self.remote.script(_RELEASE, self.lock_dir, str(self.holder["token"]), check=False)
            self.held = False
