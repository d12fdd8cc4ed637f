"""etcd's users in one round trip: the real remote/scripts/etcd-users.sh under sh, with a
stand-in `etcdctl` on PATH that records each call (and its stdin), driven by EtcdAuth.apply_users
as a host would run it. Passwords go on stdin only; a failed user is raised with etcdctl's
error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from overlayctl.errors import OverlayctlError
from overlayctl.etcd.auth import EtcdAuth, UserStep
from overlayctl.inventory import parse_inventory
from overlayctl.remote.ssh import RunResult, command_of

ETCDCTL_STUB = """#!/bin/sh
# records: argv, then stdin when the call reads one (user add / passwd)
case "$*" in *--interactive=false*) input=$(cat) ;; *) input= ;; esac
printf '%s\\n' "$(printf '%s\\t' "$@")|$input" >>"{calls}"
case "$*" in *"user add broken"*)
  echo "Error: etcdserver: user name already exists" >&2
  exit 1 ;;
esac
exit 0
"""


class ScriptHost:
    """Runs what Remote.script would run, here under sh with the stub first on PATH."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.calls = tmp / "calls"
        stub = tmp / "etcdctl"
        stub.write_text(ETCDCTL_STUB.format(calls=self.calls))
        stub.chmod(0o755)
        self.argvs: list[list[str]] = []

    def script(self, script, *args: str, stdin: str = "", **_kw: object) -> RunResult:
        argv, _label = command_of(script, *args)
        self.argvs.append(argv)
        env = {**os.environ, "PATH": f"{self.tmp}:{os.environ['PATH']}"}
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                              check=False)  # fmt: skip
        return RunResult(done.returncode, done.stdout, done.stderr)

    def recorded(self) -> list[tuple[list[str], str]]:
        out = []
        for line in self.calls.read_text().splitlines():
            argv, _, stdin = line.partition("|")
            out.append((argv.rstrip("\t").split("\t"), stdin))
        return sorted(out)


def auth(host: ScriptHost) -> EtcdAuth:
    doc = {"cluster": {"name": "c", "network": "172.21.0.0/16", "tls": False},
           "hosts": [{"name": "node1", "address": "192.0.2.1"}]}  # fmt: skip
    return EtcdAuth(host, parse_inventory(doc, base_dir=Path("/x"))[0])  # type: ignore[arg-type]


def test_every_step_runs_with_passwords_on_stdin_only(tmp_path: Path) -> None:
    host = ScriptHost(tmp_path)
    auth(host).apply_users([
        UserStep("root", "add", "pw-root", "root"),
        UserStep("node1", "passwd", "pw-1", "overlay-host"),
        UserStep("node2", "keep", None, "overlay-host"),
    ])  # fmt: skip
    calls = host.recorded()
    tail = [(argv[argv.index("user") :], stdin) for argv, stdin in calls]
    assert sorted(tail) == sorted([
        (["user", "add", "root", "--interactive=false"], "pw-root"),
        (["user", "grant-role", "root", "root"], ""),
        (["user", "passwd", "node1", "--interactive=false"], "pw-1"),
        (["user", "grant-role", "node1", "overlay-host"], ""),
        (["user", "grant-role", "node2", "overlay-host"], ""),
    ])  # fmt: skip
    assert all(argv[0] == "--endpoints=http://192.0.2.1:2379" for argv, _ in calls)
    assert not any("pw-" in arg for argv in host.argvs for arg in argv)  # never on a command line


def test_a_failed_user_is_raised_with_etcdctls_error_and_skips_its_grant(tmp_path: Path) -> None:
    host = ScriptHost(tmp_path)
    with pytest.raises(OverlayctlError, match="user add broken: Error: etcdserver: user name"):
        auth(host).apply_users([UserStep("ok", "add", "p1", "r"),
                                UserStep("broken", "add", "p2", "r")])  # fmt: skip
    granted = [argv[-1:] for argv, _ in host.recorded() if "grant-role" in argv]
    assert [argv for argv, _ in host.recorded() if "grant-role" in argv and "broken" in argv] == []
    assert granted == [["r"]]  # ok's only


def test_no_steps_is_no_round_trip(tmp_path: Path) -> None:
    host = ScriptHost(tmp_path)
    auth(host).apply_users([])
    assert host.argvs == [] and not host.calls.exists()
