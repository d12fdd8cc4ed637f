"""A Remote whose commands run in a local shell, for tests of what overlayctl runs on hosts:
Remote.batch, put_files and the scripts go through the real code, only the SSH channel is a
local process (no connection, no sudo)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from overlayctl.remote.ssh import Remote, RemoteCommandFailed, RunResult, SshTarget


class LocalRemote(Remote):
    """Runs ARGV here (or inside ENTER(ARGV): a light lab host's namespaces, as if on that
    host); LABELS records each command's log label, LINES the log."""

    def __init__(
        self,
        backup_root: str = "/nonexistent",
        name: str = "local",
        enter: Callable[[Sequence[str]], list[str]] | None = None,
    ) -> None:
        self.target = SshTarget(name, "127.0.0.1", Path("/dev/null"))
        self.enter = enter or list
        self.backup_root = backup_root
        self.lines: list[str] = []
        self._log = self.lines.append
        self.labels: list[str] = []

    def run(self, argv, *, stdin=None, log_as=None, check=True, timeout=300, **kw) -> RunResult:  # type: ignore[no-untyped-def, override]
        self.labels.append(log_as or "")
        data = stdin.decode() if isinstance(stdin, bytes) else stdin or ""
        done = subprocess.run(self.enter(argv), capture_output=True, text=True, input=data,
                              timeout=timeout, check=False)  # fmt: skip
        if check and done.returncode:
            raise RemoteCommandFailed(self.target.name, log_as or " ".join(argv),
                                      done.returncode, done.stderr)  # fmt: skip
        return RunResult(done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        pass
