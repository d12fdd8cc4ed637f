"""Small helpers for running host tools from the lab code (the only place that shells out there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from overlayctl.errors import EnvironmentProblem, OverlayctlError


def require_root_linux(what: str = "the lab") -> None:
    """Fail with one line unless we run as root on Linux."""
    if not sys.platform.startswith("linux"):
        raise EnvironmentProblem(f"{what} needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs root (namespaces, mounts, cgroups)")


def require_tools(*tools: str) -> None:
    """Fail with one line naming every missing program."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise EnvironmentProblem(
            "missing programs: " + ", ".join(missing) + " (run `make deps` to install them)"
        )


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float = 120,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program with an argument list (never a shell); raise one clear line on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
            input=input_text,
        )
    except subprocess.TimeoutExpired as exc:
        raise OverlayctlError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        raise OverlayctlError(f"`{' '.join(argv)}` failed: {last}")
    return proc
