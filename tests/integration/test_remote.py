"""overlayctl.remote against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import socket
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.lab.sshkeys import known_hosts_line, write_keypair
from overlayctl.remote.group import run_on_hosts
from overlayctl.remote.lock import HostLock
from overlayctl.remote.ssh import HostKeyRejected, Remote, RemoteCommandFailed, SshTarget

pytestmark = pytest.mark.lab


def target(sshd, **kw) -> SshTarget:
    base = SshTarget(
        name="local",
        address="127.0.0.1",
        port=sshd.port,
        key=sshd.client_key,
        known_hosts=sshd.known_hosts,
        connect_timeout=5,
    )
    return replace(base, **kw)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_arguments_reach_the_host_exactly_as_given(local_sshd) -> None:
    hostile = "a b; echo INJECTED $(id) `id` 'q' \"dq\" \n next"
    with Remote(target(local_sshd)) as r:
        assert r.run(["printf", "%s", hostile]).stdout == hostile
        assert r.script('printf "%s|%s" "$1" "$2"', "x y", "$HOME").stdout == "x y|$HOME"


def test_a_failing_command_names_host_and_command(local_sshd) -> None:
    with Remote(target(local_sshd)) as r:
        with pytest.raises(RemoteCommandFailed, match=r"local: `sh -c 'echo boom >&2; exit 3'"):
            r.run(["sh", "-c", "echo boom >&2; exit 3"])
        assert r.run(["false"], check=False).code == 1


def test_unknown_host_key_is_refused_then_accepted_only_when_asked(local_sshd, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected, match="--accept-new-host-keys"):
        Remote(target(local_sshd, known_hosts=empty)).connect()
    with Remote(target(local_sshd, known_hosts=empty), accept_new_host_keys=True) as r:
        assert r.run(["true"]).code == 0
    assert local_sshd.host_key_line.split()[1] in empty.read_text()
    with Remote(target(local_sshd, known_hosts=empty)) as r:  # recorded: strict mode now passes
        assert r.run(["true"]).code == 0


def test_plan_trusts_a_new_host_key_for_its_run_only(local_sshd, tmp_path) -> None:
    """`plan --accept-new-host-keys` writes nothing: the key is used, known_hosts stays as is."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    remote = Remote(target(local_sshd, known_hosts=empty), accept_new_host_keys=True,
                    record_host_keys=False)  # fmt: skip
    with remote as r:
        assert r.run(["true"]).code == 0
    assert empty.read_text() == ""


def test_a_changed_host_key_is_refused_even_with_accept_new(local_sshd, tmp_path) -> None:
    other = write_keypair(tmp_path / "other", "other")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(known_hosts_line([f"[127.0.0.1]:{local_sshd.port}"], other) + "\n")
    for accept in (False, True):
        with pytest.raises(HostKeyRejected, match="HOST KEY CHANGED"):
            Remote(target(local_sshd, known_hosts=wrong), accept_new_host_keys=accept).connect()
    assert wrong.read_text().count("\n") == 1  # nothing was added


def test_put_file_is_atomic_keeps_the_original_and_sets_mode(local_sshd, tmp_path) -> None:
    path = tmp_path / "etc" / "thing.conf"
    path.parent.mkdir()
    path.write_text("original\n")
    backups = tmp_path / "backup"
    with Remote(target(local_sshd), backup_root=str(backups)) as r:
        r.put_file(str(path), b"first\n", mode=0o600)
        r.put_file(str(path), b"second\n", mode=0o640)
        r.put_file(str(tmp_path / "new.conf"), b"")
        files = r.read_files([str(path), str(tmp_path / "new.conf"), str(tmp_path / "none")])
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (backups / str(path).lstrip("/")).read_text() == "original\n"  # the first original
    assert (backups / (str(tmp_path / "new.conf").lstrip("/") + ".absent")).exists()
    assert [p.name for p in path.parent.iterdir()] == ["thing.conf"]  # no temp file left
    assert files[str(path)].content == b"second\n" and files[str(path)].mode == 0o640
    assert files[str(path)].owner == "root:root"
    assert files[str(tmp_path / "new.conf")].content == b""
    assert files[str(tmp_path / "none")].content is None


def test_a_second_lock_holder_is_refused_and_named(local_sshd, tmp_path) -> None:
    lock_dir = str(tmp_path / "overlayctl.lock")
    with Remote(target(local_sshd)) as r1, Remote(target(local_sshd)) as r2:
        first = HostLock(r1, "overlayctl init", lock_dir)
        first.acquire()
        second = HostLock(r2, "overlayctl join", lock_dir)
        with pytest.raises(Conflict, match=r"locked by `overlayctl init` by .*--break-lock"):
            second.acquire()
        second.release()  # not the holder: must not remove the other's lock
        assert Path(lock_dir).is_dir()
        second.acquire(break_stale=True)
        first.release()  # no longer the holder
        assert Path(lock_dir).is_dir()
        second.release()
        assert not Path(lock_dir).exists()


def test_group_reports_each_host(local_sshd, tmp_path) -> None:
    good = target(local_sshd, name="good")
    bad = target(local_sshd, name="bad", port=1)

    def hostname(t: SshTarget) -> str:
        with Remote(t) as r:
            return r.run(["echo", t.name]).stdout.strip()

    result = run_on_hosts("connect", [good, bad], hostname, name=lambda t: t.name)
    assert result.succeeded == {"good": "good"}
    assert list(result.failed) == ["bad"]
    assert result.failed["bad"].phase == "connect"
    assert (
        result.failed["bad"].error == "bad (127.0.0.1): SSH port 1 unreachable: connection refused"
    )


def test_an_unreachable_host_says_so_in_words(local_sshd, tmp_path) -> None:
    closed = closed_port()
    with pytest.raises(OverlayctlError) as info:
        Remote(target(local_sshd, port=closed)).connect()
    assert (
        str(info.value) == f"local (127.0.0.1): SSH port {closed} unreachable: connection refused"
    )

    stranger = tmp_path / "stranger"
    write_keypair(stranger, "stranger")  # a key the server does not know
    with pytest.raises(OverlayctlError) as info:
        Remote(target(local_sshd, key=stranger)).connect()
    assert str(info.value) == f"local (127.0.0.1): authentication failed for root (key {stranger})"


def test_a_jump_host_failure_names_the_jump_host(local_sshd) -> None:
    closed = closed_port()
    with pytest.raises(OverlayctlError) as info:
        Remote(target(local_sshd, jump=("root", "127.0.0.1", closed))).connect()
    assert str(info.value) == (
        f"local (127.0.0.1): jump host 127.0.0.1: SSH port {closed} unreachable: connection refused"
    )
    # The jump host is up but cannot reach the target's port.
    with pytest.raises(OverlayctlError) as info:
        Remote(
            target(local_sshd, port=closed, jump=("root", "127.0.0.1", local_sshd.port))
        ).connect()
    assert str(info.value) == (
        f"local (127.0.0.1): SSH port {closed} unreachable from jump host 127.0.0.1: connect failed"
    )


def test_a_long_command_reports_progress_in_real_time(local_sshd) -> None:
    lines: list[tuple[str | None, str]] = []
    progress = lambda phase, line: lines.append((phase, line))  # noqa: E731
    with Remote(target(local_sshd), progress=progress, heartbeat=0.3) as r:
        r.run(["sleep", "1"], waiting_for="the sleep on local")
    assert 2 <= len(lines) <= 5  # one every 0.3 s of a 1 s command (plus SSH's own time)
    assert lines[0] == (None, "still waiting for the sleep on local (0 s so far)")
    assert lines[-1][1].startswith("still waiting for the sleep on local (")
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat")]


def test_a_jump_host_is_used_and_checked_strictly(local_sshd, tmp_path) -> None:
    # The bastion is the same sshd: the target is then reached through a direct-tcpip channel.
    through = target(local_sshd, jump=("root", "127.0.0.1", local_sshd.port))
    with Remote(through) as r:
        assert r.run(["echo", "via-jump"]).stdout == "via-jump\n"
    empty = tmp_path / "kh"
    empty.write_text("")
    with pytest.raises(HostKeyRejected):
        Remote(
            target(local_sshd, known_hosts=empty, jump=("root", "127.0.0.1", local_sshd.port))
        ).connect()
