"""Why a host cannot be reached, in words: the exceptions paramiko raises in, one line out."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

from overlayctl.remote.connect_errors import connect_failure
from overlayctl.remote.ssh import SshTarget

NODE2 = SshTarget(
    name="node2",
    address="192.168.255.155",
    known_hosts=Path("/kh"),
    key=Path("/keys/id"),
)
VIA_JUMP = SshTarget(
    name="node2",
    address="192.168.255.155",
    known_hosts=Path("/kh"),
    key=Path("/keys/id"),
    jump=("admin", "bastion.example", 2222),
)


def unreachable(code: int) -> NoValidConnectionsError:
    """What paramiko raises when every address of the host refused or had no route."""
    return NoValidConnectionsError({("192.168.255.155", 22): OSError(code, "x")})


def raised_from(cause: BaseException, exc: Exception) -> Exception:
    """EXC raised while handling CAUSE, as paramiko's banner reader does."""
    try:
        try:
            raise cause
        except BaseException:
            raise exc  # noqa: B904 - the implicit __context__ is what is being tested
    except Exception as got:
        return got


BANNER = "Error reading SSH protocol banner"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            unreachable(errno.ECONNREFUSED),
            "node2 (192.168.255.155): SSH port 22 unreachable: connection refused",
        ),
        (
            unreachable(errno.EHOSTUNREACH),
            "node2 (192.168.255.155): SSH port 22 unreachable: no route to host",
        ),
        (TimeoutError("timed out"), "node2 (192.168.255.155): SSH port 22 unreachable: timed out"),
        (
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            "node2 (192.168.255.155): SSH port 22 unreachable: network unreachable",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "node2 (192.168.255.155): SSH port 22 unreachable: name does not resolve",
        ),
        (
            paramiko.AuthenticationException("Authentication failed."),
            "node2 (192.168.255.155): authentication failed for root (key /keys/id)",
        ),
        (
            paramiko.BadAuthenticationType("Bad authentication type", ["password"]),
            "node2 (192.168.255.155): authentication failed for root (key /keys/id): "
            "Bad authentication type; allowed types: ['password']",
        ),
        (
            raised_from(TimeoutError(), paramiko.SSHException(BANNER)),
            "node2 (192.168.255.155): SSH port 22 accepted the connection but sent no SSH "
            "banner: timed out",
        ),
        (
            raised_from(EOFError(), paramiko.SSHException(BANNER)),
            "node2 (192.168.255.155): SSH port 22 accepted the connection but sent no SSH "
            "banner: connection closed",
        ),
    ],
    ids=[
        "refused", "no-route", "timeout", "net-unreachable", "no-such-name", "auth",
        "auth-type", "banner-timeout", "banner-closed",
    ],
)  # fmt: skip
def test_each_failure_is_said_in_words(exc: BaseException, line: str) -> None:
    assert connect_failure(NODE2, exc) == line


def test_without_a_key_the_line_says_none_was_given() -> None:
    no_key = SshTarget(name="n", address="10.9.9.9", known_hosts=Path("/kh"))
    exc = paramiko.SSHException("No authentication methods available")
    assert connect_failure(no_key, exc) == (
        "n (10.9.9.9): authentication failed for root (no ssh.key in the inventory)"
    )


def test_a_failing_jump_host_is_named_with_its_own_port_and_user() -> None:
    assert connect_failure(VIA_JUMP, unreachable(errno.ECONNREFUSED), at_jump=True) == (
        "node2 (192.168.255.155): jump host bastion.example: SSH port 2222 unreachable: "
        "connection refused"
    )
    assert connect_failure(
        VIA_JUMP, socket.gaierror(socket.EAI_NONAME, "unknown"), at_jump=True
    ) == ("node2 (192.168.255.155): jump host bastion.example: SSH port 2222 unreachable: "
          "name does not resolve")  # fmt: skip
    auth = paramiko.AuthenticationException("Authentication failed.")
    assert connect_failure(VIA_JUMP, auth, at_jump=True) == (
        "node2 (192.168.255.155): jump host bastion.example: authentication failed for admin "
        "(key /keys/id)"
    )


def test_a_jump_host_that_cannot_reach_the_target_says_so() -> None:
    exc = paramiko.ChannelException(2, "Connect failed")
    assert connect_failure(VIA_JUMP, exc) == (
        "node2 (192.168.255.155): SSH port 22 unreachable from jump host bastion.example: "
        "connect failed"
    )


def test_anything_else_keeps_paramikos_words_on_one_line() -> None:
    exc = paramiko.SSHException("Incompatible ssh peer (no acceptable kex algorithm)")
    line = connect_failure(NODE2, exc)
    assert line == (
        "node2 (192.168.255.155): SSH on port 22 failed: "
        "Incompatible ssh peer (no acceptable kex algorithm)"
    )
    assert "\n" not in connect_failure(NODE2, OSError(errno.EPERM, "Operation not permitted"))
