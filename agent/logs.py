"""Structured logs: one line per event on stderr, ``key=value`` pairs (logfmt).

Every line starts with ``ts=... level=... logger=... msg="..."``; an event logged with
:func:`event` adds ``event=<name>`` and its fields. Values with spaces, quotes or ``=`` are
quoted; newlines (tracebacks included) are escaped so one event stays one line.
Secrets never reach this module: callers pass redacted values.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
_FIELDS = "overlay_fields"


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def format_fields(fields: dict[str, Any]) -> str:
    """``k1=v1 k2="v 2"`` (None values left out)."""
    return " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        head: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        head.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            head["exc"] = self.formatException(record.exc_info)
        return format_fields(head)


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record (ours and the libraries') to stderr as logfmt lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # gRPC and the etcd library are chatty at debug level.
    for name in ("grpc", "pyetcd", "urllib3"):
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))


def event(logger: logging.Logger, level: int, name: str, msg: str = "", **fields: Any) -> None:
    """Log one event: ``event=<name>`` plus ``fields`` as key=value pairs."""
    logger.log(level, msg or name, extra={_FIELDS: {"event": name, **fields}})
