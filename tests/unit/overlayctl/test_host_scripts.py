"""The programs overlayctl runs on hosts (overlayctl/remote/scripts/): each is a file that parses
(sh -n; Python 3.9's grammar), the Python ones need only the standard library and run nothing
when imported, every file is named by the code that runs it, and Remote.batch keeps each
command's output and exit code apart (run here by a local shell in place of SSH)."""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from overlayctl.errors import OverlayctlError
from overlayctl.remote.batch import BATCH_AT_ONCE
from overlayctl.remote.scripts import FOLDER, HostScript
from overlayctl.remote.ssh import Remote, RunResult, command_of
from overlayctl.remote.target import SshTarget
from tests.local_remote import LocalRemote

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = sorted(p for p in FOLDER.iterdir() if p.suffix in (".sh", ".py") and p.stem != "__init__")


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.suffix == ".sh"], ids=lambda p: p.name)
def test_shell_scripts_parse(path: Path) -> None:
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.suffix == ".py"], ids=lambda p: p.name)
def test_python_scripts_are_stdlib_only_python_39_and_inert_on_import(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path), feature_version=(3, 9))
    imported = {a.name.partition(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}  # fmt: skip
    imported |= {n.module.partition(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    last = tree.body[-1]
    assert isinstance(last, ast.If) and "__main__" in ast.unparse(last.test)
    assert all(isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.If | ast.Expr)
               for n in tree.body), "only imports, functions and the main guard"  # fmt: skip


def test_every_script_is_named_by_the_code_that_runs_it() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "overlayctl").rglob("*.py"))
    named = set(re.findall(r'HostScript\("([^"]+)"', code))
    assert named == {p.name for p in SCRIPTS}


def test_a_missing_script_is_an_error_at_import_not_on_a_host() -> None:
    with pytest.raises(FileNotFoundError):
        HostScript("no-such-script.sh")


def test_log_labels_name_the_script_never_its_text() -> None:
    argv, label = command_of(HostScript("facts.sh"), "/a b", "x")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "/a b", "x"]
    assert label == "sh -c <facts> '/a b' x"
    argv, label = command_of(HostScript("agent_ready.py"), "8471", "90")
    assert argv[:2] == ["python3", "-c"] and argv[3:] == ["8471", "90"]
    assert label == "python3 -c <agent_ready> 8471 90"


@pytest.mark.parametrize("parallel", [False, True])
def test_a_batch_keeps_each_commands_output_and_exit_code(parallel: bool) -> None:
    remote = LocalRemote()
    results = remote.batch([
        (["printf", "a\\nb\\n"], "first"),
        (["sh", "-c", "printf 'no newline'; exit 3"], "second"),
        (["cat"], "stdin is empty"),
        (["true"], "silent"),
    ], parallel=parallel)  # fmt: skip
    assert [(r.code, r.stdout) for r in results] == [
        (0, "a\nb\n"), (3, "no newline"), (0, ""), (0, ""),
    ]  # fmt: skip
    assert remote.lines == [
        "local: first -> exit 0", "local: second -> exit 3",
        "local: stdin is empty -> exit 0", "local: silent -> exit 0",
    ]  # fmt: skip


def test_a_parallel_batch_runs_its_commands_at_once(tmp_path) -> None:
    """Each command waits (at most 5 s) for the other's mark: one after the other, the first
    would time out."""
    wait = (
        'echo x > "$1"; i=0; while [ ! -e "$2" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); '
        'done; test -e "$2"'
    )
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    results = LocalRemote().batch([
        (["sh", "-c", wait, "sh", a, b], "a"), (["sh", "-c", wait, "sh", b, a], "b"),
    ], parallel=True)  # fmt: skip
    assert [r.code for r in results] == [0, 0]


def test_a_parallel_batch_runs_at_most_its_limit_at_once(tmp_path) -> None:
    """Each command counts the others running beside it (a file per running command): never
    more than BATCH_AT_ONCE, and every output still in its place."""
    count = 'touch "$1/$2"; sleep 0.2; n=$(ls "$1" | wc -l); rm "$1/$2"; echo "$2 $n"'
    n = 2 * BATCH_AT_ONCE + 3
    results = LocalRemote().batch(
        [(["sh", "-c", count, "sh", str(tmp_path), str(i)], str(i)) for i in range(n)],
        parallel=True,
    )
    seen = [r.stdout.split() for r in results]
    assert [int(i) for i, _ in seen] == list(range(n))
    assert 1 < max(int(c) for _, c in seen) <= BATCH_AT_ONCE


def test_a_batch_that_stops_at_a_failure_runs_nothing_after_it(tmp_path) -> None:
    """The restart that failed is the batch's last command: nothing after it runs (a readiness
    wait would only wait), and the stderr ends with its own line."""
    mark = tmp_path / "ran"
    results = LocalRemote().batch([
        (["true"], "first"),
        (["sh", "-c", "echo restart failed >&2; exit 4"], "restart"),
        (["touch", str(mark)], "after"),
    ], stop_at_failure=True)  # fmt: skip
    assert [r.code for r in results] == [0, 4, 255]
    assert not mark.exists()
    assert results[1].stderr.strip().splitlines()[-1] == "restart failed"


def test_a_closed_remote_never_logs_in_again() -> None:
    """fabric reopens a closed connection by itself; a Remote closed by the session (its host
    left the run) refuses instead."""

    class Conn:
        opened = 0

        def open(self) -> None:
            Conn.opened += 1

        def close(self) -> None:
            pass

    remote = Remote.__new__(Remote)
    remote.target = SshTarget("n1", "192.0.2.1", Path("/dev/null"))
    remote._conn = Conn()  # type: ignore[assignment]
    remote._open_again()
    remote.close()
    with pytest.raises(OverlayctlError, match="n1: connection closed"):
        remote._open_again()
    assert Conn.opened == 1


def test_a_batch_that_cannot_run_gives_every_command_its_failure() -> None:
    class NoSudo(LocalRemote):
        def run(self, argv, **kw) -> RunResult:  # type: ignore[no-untyped-def, override]
            return RunResult(127, "", "sudo: command not found\n")

    results = NoSudo().batch([(["id", "-u"], "id"), (["true"], "true")])
    assert [(r.code, r.stderr) for r in results] == [(127, "sudo: command not found\n")] * 2


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root:root needs root")
def test_put_files_writes_each_file_atomically_with_its_mode_and_first_backup(tmp_path) -> None:
    backups = tmp_path / "backup"
    remote = LocalRemote(str(backups))
    old = tmp_path / "etc" / "old.conf"
    old.parent.mkdir()
    old.write_text("original\n")
    new = tmp_path / "etc" / "sub" / "new.key"
    empty = tmp_path / "etc" / "empty"
    remote.put_files([
        (str(old), b"replaced\n", 0o644, "root:root"),
        (str(new), b"-----BEGIN KEY-----\nsecret\n" * 200, 0o600, "root:root"),
        (str(empty), b"", 0o640, "root:root"),
    ])  # fmt: skip
    assert old.read_text() == "replaced\n" and stat.S_IMODE(old.stat().st_mode) == 0o644
    assert new.read_bytes() == b"-----BEGIN KEY-----\nsecret\n" * 200
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(new.parent.stat().st_mode) == 0o755  # folders made as usual
    assert empty.read_bytes() == b"" and stat.S_IMODE(empty.stat().st_mode) == 0o640
    assert (backups / str(old).lstrip("/")).read_text() == "original\n"
    assert (backups / (str(new).lstrip("/") + ".absent")).exists()
    assert sorted(p.name for p in old.parent.iterdir()) == ["empty", "old.conf", "sub"]
    remote.put_file(str(old), b"again\n")  # the first original stays the backup
    assert (backups / str(old).lstrip("/")).read_text() == "original\n"
    assert remote.labels[-1] == f"sh -c <script> {old} 644 root:root {backups}{old}"
    assert "secret" not in " ".join(remote.labels)  # contents never reach a log line


@pytest.mark.parametrize(
    ("shown", "reloads"),
    [
        ("LoadState=loaded\nNeedDaemonReload=no\n", False),
        ("NeedDaemonReload=no\nLoadState=loaded\n", False),
        ("LoadState=loaded\nNeedDaemonReload=yes\n", True),
        ("LoadState=not-found\nNeedDaemonReload=no\n", True),
        ("LoadState=masked\nNeedDaemonReload=no\n", True),
        ("", True),  # systemctl said nothing (failed): reload
    ],
)
def test_reload_if_needed_reloads_unless_systemd_has_the_unit_as_on_disk(
    tmp_path: Path, shown: str, reloads: bool
) -> None:
    """reload-if-needed.sh, with a systemctl that answers `show` with SHOWN and logs the rest."""
    log, answer = tmp_path / "calls", tmp_path / "shown"
    answer.write_text(shown)
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" = show ] && cat {answer}\nexit 0\n')
    fake.chmod(0o755)
    argv, _ = command_of(HostScript("reload-if-needed.sh"), "overlay-agent")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    calls = log.read_text().splitlines()
    assert calls[0] == "show -p LoadState -p NeedDaemonReload overlay-agent"
    assert (calls[1:] == ["daemon-reload"]) is reloads and len(calls) <= 2
    assert done.stdout.strip() == ("reloaded" if reloads else "not needed")
