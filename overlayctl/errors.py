"""Errors that end a command with one clear line and a distinct exit code (never a traceback)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Documented in the README; scripts may rely on them."""

    OK = 0
    FAILED = 1  # the operation ran and something on a host failed or is unhealthy
    BAD_INPUT = 2  # inventory, arguments or files are invalid; nothing was touched
    ENVIRONMENT = 3  # this machine cannot run the command (not root, not Linux, a tool missing)
    CONFLICT = 4  # another run holds the lock, a lab of that name exists, a config differs


class OverlayctlError(Exception):
    """An error reported as one line, ending the command with `code`."""

    code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BadInput(OverlayctlError):
    code = ExitCode.BAD_INPUT


class EnvironmentProblem(OverlayctlError):
    code = ExitCode.ENVIRONMENT


class Conflict(OverlayctlError):
    code = ExitCode.CONFLICT
