"""Why an SSH connection could not be made, in words an operator acts on.

paramiko reports an unreachable host as `[Errno None] Unable to connect to port 22 on ...` and a
rejected key as `Authentication failed.`; neither says which of refused, timed out, no route,
unknown name or wrong key it was, nor whether the jump host or the target failed. This maps the
exceptions to one line: `node2 (192.168.255.155): SSH port 22 unreachable: connection refused`.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

if TYPE_CHECKING:
    from overlayctl.remote.target import SshTarget

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.ECONNRESET: "connection reset",
}
# Checked in order: a gaierror and a timeout are OSErrors whose errno says less.
_KIND_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (socket.gaierror, "name does not resolve"),
    (TimeoutError, "timed out"),
    (EOFError, "connection closed"),
)


def connect_failure(target: SshTarget, exc: BaseException, *, at_jump: bool = False) -> str:
    """Why TARGET could not be reached or logged in to, in words (exception in, one line out).

    AT_JUMP: EXC came from the jump host itself (reaching it or logging in to it), so the line
    names the jump host; a jump host that cannot reach the target says so as well.
    """
    where = f"{target.name} ({target.address})"
    user, port = target.user, target.port
    if at_jump and target.jump is not None:
        user, jump_host, port = target.jump
        where += f": jump host {jump_host}"
    elif target.jump is not None and isinstance(exc, paramiko.ChannelException):
        return (
            f"{where}: SSH port {port} unreachable from jump host {target.jump[1]}: "
            f"{(exc.text or 'channel refused').lower()}"
        )
    text = str(exc)
    if isinstance(exc, paramiko.AuthenticationException) or (
        isinstance(exc, paramiko.SSHException)
        and ("authentication methods" in text or "private key" in text)
    ):
        key = f"key {target.key}" if target.key else "no ssh.key in the inventory"
        plain = text in ("Authentication failed.", "No authentication methods available")
        return f"{where}: authentication failed for {user} ({key}){'' if plain else ': ' + text}"
    if isinstance(exc, paramiko.SSHException):
        if "protocol banner" in text:
            return (
                f"{where}: SSH port {port} accepted the connection but sent no SSH banner: "
                f"{_socket_words(exc.__context__) if exc.__context__ else 'timed out'}"
            )
        return f"{where}: SSH on port {port} failed: {text}"
    return f"{where}: SSH port {port} unreachable: {_socket_words(exc)}"


def _socket_words(exc: BaseException) -> str:
    """`connection refused`, `timed out`, ...: what a failed TCP connect means to an operator."""
    if isinstance(exc, NoValidConnectionsError):
        # One error per address tried (IPv4 and IPv6 of a name); usually one.
        words = dict.fromkeys(_socket_words(e) for e in exc.errors.values())
        return "; ".join(words) or "no address to connect to"
    for kind, words in _KIND_WORDS:
        if isinstance(exc, kind):
            return words
    code = getattr(exc, "errno", None)
    if code in _ERRNO_WORDS:
        return _ERRNO_WORDS[code]
    strerror = getattr(exc, "strerror", None)
    return strerror.lower() if strerror else str(exc) or type(exc).__name__
