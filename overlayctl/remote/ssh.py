"""One SSH connection to one host (fabric over paramiko), with strict host key checking.

Every remote command is an argument list joined with shlex quoting; scripts are passed to
`sh -c` with their values as positional arguments, never pasted into the script text.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fabric
import paramiko

from overlayctl.errors import OverlayctlError
from overlayctl.plan.facts import RemoteFile, parse_files
from overlayctl.remote.batch import batch_text
from overlayctl.remote.connect_errors import connect_failure
from overlayctl.remote.heartbeat import INTERVAL, Heartbeat
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.target import SshTarget

READ_FILES = HostScript("read-files.sh")
PUT_FILE = HostScript("put-file.sh", label="script")
RESTORE_BACKUPS = HostScript("restore-backups.sh", label="restore")

BACKUP_ROOT = "/var/lib/overlayctl/backup"


class HostKeyRejected(OverlayctlError):
    """The host's key is unknown (without --accept-new-host-keys) or differs from known_hosts."""


class RemoteCommandFailed(OverlayctlError):
    def __init__(self, host: str, command: str, code: int, stderr: str) -> None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
        super().__init__(f"{host}: `{command}` failed: {last}")
        self.exit_code = code
        self.stderr = stderr


@dataclass(frozen=True)
class RunResult:
    code: int
    stdout: str
    stderr: str


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: record unknown hosts, never changed keys.

    A changed key never reaches a policy: paramiko raises BadHostKeyException before.
    """

    _lock = threading.Lock()

    def __init__(self, known_hosts: Path, record: bool = True) -> None:
        """RECORD False (`plan`, which writes nothing): trust the key for this run only."""
        self.known_hosts = known_hosts
        self.record = record

    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        if self.record:
            with self._lock:
                self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
                with open(self.known_hosts, "a") as out:
                    out.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _RejectPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        raise HostKeyRejected(
            f"{hostname}: host key not in known_hosts ({key.get_name()} "
            f"{key.fingerprint}); check it and re-run with --accept-new-host-keys"
        )


# PHASE (None: the run's current one), MESSAGE: a progress line about a long wait on this host.
Progress = Callable[[str | None, str], None]


class Remote:
    """A connected host. Use as a context manager or call close().

    PROGRESS hears about every wait longer than HEARTBEAT s (a slow command, a poll loop), once
    per HEARTBEAT s, so that a long restart never looks like a hung run.
    """

    def __init__(
        self,
        target: SshTarget,
        accept_new_host_keys: bool = False,
        backup_root: str = BACKUP_ROOT,
        log: Callable[[str], None] | None = None,
        *,
        progress: Progress | None = None,
        heartbeat: float = INTERVAL,
        record_host_keys: bool = True,
    ) -> None:
        self.target = target
        self.backup_root = backup_root
        self._log = log or (lambda _line: None)
        self._progress = progress
        self._heartbeat = heartbeat
        self._waiting = threading.local()  # a wait in progress on this thread (no nested lines)
        if not target.known_hosts.exists() and not accept_new_host_keys:
            raise HostKeyRejected(
                f"{target.name}: known_hosts file {target.known_hosts} is missing"
            )
        self._gateway = None
        if target.jump is not None:
            user, host, port = target.jump
            self._gateway = _connection(
                target,
                accept_new_host_keys,
                host=host,
                user=user,
                port=port,
                record=record_host_keys,
            )
        self._conn = _connection(
            target, accept_new_host_keys,
            host=target.address, user=target.user, port=target.port, gateway=self._gateway,
            record=record_host_keys,
        )  # fmt: skip

    def connect(self) -> None:
        """Log in (through the jump host first, if any, so that its failures name it)."""
        with self.waiting(f"SSH on {self.target.address} port {self.target.port} to answer"):
            if self._gateway is not None:
                self._open(self._gateway, at_jump=True)
            self._open(self._conn, at_jump=False)

    def _open(self, conn: fabric.Connection, at_jump: bool) -> None:
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyRejected(
                f"{self.target.name}: HOST KEY CHANGED for {exc.hostname} (got "
                f"{exc.key.get_name()} {exc.key.fingerprint}); refusing to connect. If the host "
                f"was really reinstalled, remove its line from {self.target.known_hosts}"
            ) from None
        except HostKeyRejected:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise OverlayctlError(connect_failure(self.target, exc, at_jump=at_jump)) from None

    @contextlib.contextmanager
    def waiting(self, what: str, phase: str | None = None) -> Iterator[Heartbeat]:
        """Progress lines about WHAT while the block runs longer than the heartbeat interval.

        For local poll loops (etcd's health wait) and, through `run`, every remote command. A
        wait inside another wait on the same thread stays quiet: the outer one already speaks.
        """
        if getattr(self._waiting, "busy", False) or self._progress is None:
            with Heartbeat(what, None) as quiet:
                yield quiet
            return
        progress = self._progress
        self._waiting.busy = True
        try:
            with Heartbeat(what, lambda line: progress(phase, line), self._heartbeat) as beat:
                yield beat
        finally:
            self._waiting.busy = False

    def close(self) -> None:
        """Close the connection for good: a later command raises instead of logging in again
        (fabric would reopen it), e.g. a background install on a host that left the run."""
        self._closed = True
        self._conn.close()

    def _open_again(self) -> None:
        if getattr(self, "_closed", False):
            raise OverlayctlError(f"{self.target.name}: connection closed (the host left the run)")
        self._conn.open()

    def __enter__(self) -> Remote:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        check: bool = True,
        timeout: float | None = 300,
        log_as: str | None = None,
        waiting_for: str | None = None,
        quiet: bool = False,
    ) -> RunResult:
        """Run ARGV (quoted) on the host, as root through `sudo -n` when the inventory says so.

        WAITING_FOR ("etcd to start") names the wait in progress lines should the command take
        long; without it they quote the command.
        """
        full = (["sudo", "-n", "--"] if self.target.sudo else []) + list(argv)
        command = shlex.join(full)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        label = log_as or command
        what = waiting_for or f"`{label if len(label) <= 60 else label[:57] + '...'}`"
        try:
            with self.waiting(what):
                code, stdout, stderr = self._exec(command, data, timeout)
        except TimeoutError as exc:
            raise OverlayctlError(
                f"{self.target.name}: `{log_as or command}` did not finish in {timeout} s"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise OverlayctlError(f"{self.target.name}: SSH connection lost: {exc}") from None
        out = RunResult(code, stdout, stderr)
        # Commands only: file contents travel on stdin and never reach the log.
        if not quiet:
            self._log(f"{self.target.name}: {log_as or command} -> exit {out.code}")
        if check and out.code != 0:
            raise RemoteCommandFailed(self.target.name, log_as or command, out.code, out.stderr)
        return out

    def _exec(
        self, command: str, stdin: bytes | None, timeout: float | None
    ) -> tuple[int, str, str]:
        """One exec channel: send STDIN whole, then read stdout and stderr until exit.

        (invoke's runner feeds stdin a byte at a time with a sleep in between, which made a
        3 KB file take seconds; a plain channel sends it in one go.)
        """
        self._open_again()
        transport = self._conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("not connected")
        out, err = bytearray(), bytearray()
        with transport.open_session(timeout=self.target.connect_timeout) as chan:
            chan.settimeout(timeout)  # each blocking read; socket.timeout is a TimeoutError
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            # paramiko buffers stderr on its own while we read stdout to its end; our commands'
            # stderr stays far below the channel window, so this cannot stall.
            while chunk := chan.recv(65536):
                out += chunk
            while chunk := chan.recv_stderr(65536):
                err += chunk
            code = chan.recv_exit_status()
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def script(
        self, script: HostScript | str, *args: str, name: str = "script", **kw: Any
    ) -> RunResult:
        """Run SCRIPT (one of ours, or a fixed shell text named NAME) with ARGS as $1.. (values
        never enter the script's text)."""
        argv, label = command_of(script, *args, name=name)
        return self.run(argv, log_as=label, **kw)

    def batch(
        self,
        commands: Sequence[Command],
        *,
        timeout: float | None = 300,
        waiting_for: str = "",
        parallel: bool = False,
        stop_at_failure: bool = False,
    ) -> list[RunResult]:
        """COMMANDS ((argv, log label) pairs) in one round trip: one shell runs them in turn
        (PARALLEL: all at once, independent reads; STOP_AT_FAILURE: none after one that
        failed, which then reads as not run), stdin from /dev/null, each with its own stdout and
        exit code. stderr is the batch's as a whole; when the batch itself cannot run
        (no sudo there), every result carries its exit code and stderr. For reads that would
        each cost a round trip of their own."""
        token = f"--overlayctl-batch-{secrets.token_hex(8)}--"
        text = batch_text([argv for argv, _ in commands], token, parallel, stop_at_failure)
        what = waiting_for or f"{len(commands)} commands"
        labels = "; ".join(label for _, label in commands)
        got = self.run(["sh", "-c", text], check=False, timeout=timeout, waiting_for=what,
                       log_as=f"batch: {labels}", quiet=True)  # fmt: skip
        results, rest = [], got.stdout
        for _argv, label in commands:
            out, found, after = rest.partition(f"\n{token} ")
            if not found:  # the batch stopped before this command (or never ran)
                results.append(RunResult(got.code or 255, rest, got.stderr))
                self._log(f"{self.target.name}: {label} -> not run (batch exit {got.code})")
                rest = ""
                continue
            code, _, rest = after.partition("\n")
            results.append(RunResult(int(code), out, got.stderr))
            self._log(f"{self.target.name}: {label} -> exit {code}")
        return results

    def upload(self, files: Sequence[Path], remote_dir: str) -> None:
        """Copy FILES into a new REMOTE_DIR (0700) over SFTP, as the login user.

        The folder must not exist yet: one made by someone else could hold their files.
        """
        self._open_again()
        sftp = self._conn.sftp()
        try:
            sftp.mkdir(remote_dir, mode=0o700)
        except OSError as exc:
            raise OverlayctlError(
                f"{self.target.name}: cannot create {remote_dir}: {exc}"
            ) from None
        with self.waiting(f"the upload of {len(files)} files to {remote_dir}"):
            for path in files:
                sftp.put(str(path), f"{remote_dir}/{path.name}")
        self._log(f"{self.target.name}: sftp {len(files)} files -> {remote_dir}")

    def download(self, remote_path: str, local: Path) -> None:
        """Copy REMOTE_PATH to LOCAL over SFTP (as the login user)."""
        with self.waiting(f"the download of {remote_path}"):
            self._conn.sftp().get(remote_path, str(local))
        self._log(f"{self.target.name}: sftp {remote_path} -> {local}")

    def read_files(self, paths: Sequence[str]) -> dict[str, RemoteFile]:
        """Content, mode and owner of PATHS in one round trip."""
        if not paths:
            return {}
        return parse_files(self.script(READ_FILES, *paths).stdout, paths)

    def put_file(
        self, path: str, content: bytes, mode: int = 0o644, owner: str = "root:root"
    ) -> None:
        """Write PATH atomically (temp file + rename in the same folder).

        The first time overlayctl replaces a file, the original is kept under BACKUP_ROOT (or a
        marker that it did not exist), so `reset` can put things back as they were.
        """
        self.put_files([(path, content, mode, owner)])

    def put_files(self, files: Sequence[tuple[str, bytes, int, str]]) -> None:
        """Each (path, content, mode, owner) written as put_file writes it, all in one round
        trip (a phase writes its files on a host together). Contents travel on stdin only."""
        if not files:
            return
        args = [
            arg
            for path, _, mode, owner in files
            for arg in (path, f"{mode:o}", owner, self.backup_root + path)
        ]
        stdin = "".join(base64.b64encode(content).decode() + "\n" for _, content, _, _ in files)
        self.script(PUT_FILE, *args, stdin=stdin)

    def restore_backups(self) -> None:
        """Put back every file put_file replaced (from its first backup) and remove the ones
        it created; the backups go too (`reset`)."""
        self.script(RESTORE_BACKUPS, self.backup_root)


def _connection(
    target: SshTarget,
    accept_new: bool,
    *,
    host: str,
    user: str,
    port: int,
    gateway: fabric.Connection | None = None,
    record: bool = True,
) -> fabric.Connection:
    """A fabric connection that checks host keys strictly against the target's known_hosts."""
    connect_kwargs: dict[str, object] = {"look_for_keys": False, "allow_agent": False}
    if target.key is not None:
        connect_kwargs["key_filename"] = str(target.key)
    conn = fabric.Connection(
        host=host,
        user=user,
        port=port,
        config=fabric.Config(overrides={"load_ssh_configs": False}),
        gateway=gateway,
        connect_timeout=int(target.connect_timeout),
        connect_kwargs=connect_kwargs,
    )
    if target.known_hosts.exists():
        conn.client.load_host_keys(str(target.known_hosts))
    conn.client.set_missing_host_key_policy(
        _AcceptNewPolicy(target.known_hosts, record) if accept_new else _RejectPolicy()
    )
    return conn


# A command for Remote.run or Remote.batch: the argument list, and how the log names it.
Command = tuple[list[str], str]


def command_of(script: HostScript | str, *args: str, name: str = "script") -> Command:
    """SCRIPT (one of ours, or a fixed shell text named NAME) with ARGS, and its log label:
    `sh -c <facts> ARGS`, never the script's text."""
    if isinstance(script, HostScript):
        return script.argv(*args), f"{script.interpreter} -c <{script.label}> {shlex.join(args)}"
    return ["sh", "-c", script, "sh", *args], f"sh -c <{name}> {shlex.join(args)}"


def batch_checked(
    remote: Remote,
    commands: Sequence[Command],
    *,
    timeout: float | None = 300,
    waiting_for: str = "",
    stop_at_failure: bool = False,
) -> list[RunResult]:
    """REMOTE.batch(COMMANDS), where every command must succeed: the first that failed raises,
    named (a function, not a method: anything with Remote's batch will do). STOP_AT_FAILURE:
    as Remote.batch's (the error then shows that command's own last stderr line)."""
    results = (
        remote.batch(commands, timeout=timeout, waiting_for=waiting_for,
                     stop_at_failure=stop_at_failure) if commands else []
    )  # fmt: skip
    for (_argv, label), got in zip(commands, results, strict=True):
        if got.code != 0:
            raise RemoteCommandFailed(remote.target.name, label, got.code, got.stderr)
    return results
