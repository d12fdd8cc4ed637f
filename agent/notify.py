"""systemd's sd_notify protocol without a dependency.

One AF_UNIX datagram per message to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Without NOTIFY_SOCKET (not started by systemd with Type=notify) every call is a
no-op. The watchdog interval comes from ``WATCHDOG_USEC`` (honoured only if ``WATCHDOG_PID`` is
unset or ours); pings should be sent at half of it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | None:
    """The address to send to: a filesystem path, or ``\\0name`` for ``@name``; else None."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not supported


class Notifier:
    """Sends sd_notify messages; every method returns True if a datagram was sent."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) listens."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=value``) as one datagram; failures are logged, not raised."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (and an optional STATUS)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=<one line shown by systemctl status>."""
        return self.send("STATUS=" + text.replace("\n", " "))

    def stopping(self) -> bool:
        """STOPPING=1."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1, only when systemd asked for a watchdog."""
        if self.watchdog_interval is None:
            return False
        return self.send("WATCHDOG=1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
