"""overlayctl.remote against a real OpenSSH server on 127.0.0.1; the jump host tests against two
servers in network namespaces of their own, where only the bastion reaches the target."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from overlayctl.errors import Conflict, OverlayctlError
from overlayctl.lab.sshkeys import known_hosts_line, write_keypair
from overlayctl.remote.group import run_on_hosts
from overlayctl.remote.lock import HostLock
from overlayctl.remote.ssh import HostKeyRejected, Remote, RemoteCommandFailed, SshTarget
from tests.conftest import unique_name
from tests.sshd import LocalSshd, start_sshd

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
    lock_dir = str(tmp_path / "overlayctl" / "lock")
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
    assert stat.S_IMODE((tmp_path / "overlayctl").stat().st_mode) == 0o700  # made root's own


@pytest.mark.parametrize("unsafe", ["mode 0777", "a symlink", "a file"])
def test_a_lock_folder_others_could_write_is_refused(local_sshd, tmp_path, unsafe) -> None:
    """The folder the lock lives in must be root's own 0700 one: anything else could hold a
    lock planted by another user, so it is named and not used (issue 17 item 8)."""
    folder = tmp_path / "overlayctl"
    if unsafe == "mode 0777":
        folder.mkdir()
        folder.chmod(0o777)
    elif unsafe == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    else:
        folder.write_text("")
    with (
        Remote(target(local_sshd)) as r,
        pytest.raises(
            Conflict,
            match=rf"^local: {folder} is not a folder owned by root "
            "with mode 0700 .*: refusing to keep the lock there",
        ),
    ):
        HostLock(r, "overlayctl init", str(folder / "lock")).acquire()
    assert not (tmp_path / "elsewhere" / "lock").exists()


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


# -- a target that only the jump host reaches ---------------------------------------------------
#
#   namespace C (client)          namespace J (bastion)            namespace T (target)
#   10.254.1.1/30 --- veth --- 10.254.1.2/30  10.254.2.1/30 --- veth --- 10.254.2.2/30
#                               sshd on .1.2                          sshd on .2.2
#
# C has no route to 10.254.2.0/30 and J does not forward, so the target answers only to
# connections the bastion's sshd opens itself. The client (overlayctl.remote) runs in C, in a
# subprocess under `ip netns exec`: nothing here sends from the machine's own namespace.

BASTION, TARGET = "10.254.1.2", "10.254.2.2"

# Each case: SshTarget fields + argv; one result per case: stdout, or the error's type + text.
CLIENT = r"""
import json, sys
from pathlib import Path
from overlayctl.remote.ssh import Remote, SshTarget

results = []
for case in json.loads(sys.argv[1]):
    jump = tuple(case["jump"]) if case["jump"] else None
    target = SshTarget(name=case["name"], address=case["address"], port=case["port"],
                       key=Path(case["key"]), known_hosts=Path(case["known_hosts"]),
                       connect_timeout=5, jump=jump)
    try:
        with Remote(target) as remote:
            results.append({"stdout": remote.run(case["argv"]).stdout})
    except Exception as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


@dataclass
class JumpLab:
    client_ns: str
    bastion: LocalSshd
    target: LocalSshd
    key: Path
    known_hosts: Path  # both servers' host keys

    def case(self, name: str, address: str, port: int, argv: list[str], **kw: object) -> dict:
        return {"name": name, "address": address, "port": port, "argv": argv, "jump": None,
                "key": str(self.key), "known_hosts": str(self.known_hosts), **kw}  # fmt: skip

    def run(self, cases: list[dict]) -> list[dict]:
        """CASES through overlayctl.remote, from the client namespace."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.client_ns, sys.executable, "-c", CLIENT,
             json.dumps(cases)],
            capture_output=True, text=True, timeout=120, check=False,
            cwd=Path(__file__).resolve().parents[3],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def jump_lab(tmp_path: Path) -> Iterator[JumpLab]:
    """The three namespaces above with both sshds; all removed afterwards."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and openssh-server")
    client, bastion, target = (unique_name(f"ovl-j{x}-") for x in "cbt")
    made: list[str] = []
    servers: list[LocalSshd] = []
    try:
        for ns in (client, bastion, target):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for (a, a_ip), (b, b_ip) in (
            ((client, "10.254.1.1"), (bastion, BASTION)),
            ((bastion, "10.254.2.1"), (target, TARGET)),
        ):
            _ip("-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b)
            _ip("-n", a, "addr", "add", f"{a_ip}/30", "dev", "v0")
            _ip("-n", b, "addr", "add", f"{b_ip}/30", "dev", "v1")
            _ip("-n", a, "link", "set", "v0", "up")
            _ip("-n", b, "link", "set", "v1", "up")
        # A new namespace does not forward; say so, so that no host setting can change it.
        subprocess.run(["ip", "netns", "exec", bastion, "sysctl", "-qw",
                        "net.ipv4.ip_forward=0"], check=True, timeout=30)  # fmt: skip
        servers.append(start_sshd(tmp_path / "bastion", netns=bastion, address=BASTION))
        servers.append(start_sshd(tmp_path / "target", netns=target, address=TARGET))
        jump_sshd, target_sshd = servers
        # One client key for both (as SshTarget has), both host keys in one known_hosts.
        with (tmp_path / "bastion" / "authorized_keys").open("a") as keys:
            keys.write((tmp_path / "target" / "authorized_keys").read_text())
        known = tmp_path / "known_hosts"
        known.write_text(jump_sshd.known_hosts.read_text() + target_sshd.known_hosts.read_text())
        yield JumpLab(client, jump_sshd, target_sshd, target_sshd.client_key, known)
    finally:
        for server in servers:
            server.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def _inet(result: dict) -> set[str]:
    """The IPv4 addresses a case's `ip -4 -o addr show` printed: which namespace it ran in."""
    assert set(result) == {"stdout"}, result  # it ran, or say why not
    return {line.split()[3] for line in result["stdout"].splitlines()}


def test_a_target_only_the_jump_host_reaches(jump_lab: JumpLab) -> None:
    lab = jump_lab
    addrs = ["ip", "-4", "-o", "addr", "show"]
    via = ["root", BASTION, lab.bastion.port]
    direct_bastion, direct_target, through = lab.run([
        lab.case("bastion", BASTION, lab.bastion.port, addrs),
        lab.case("target", TARGET, lab.target.port, addrs),
        lab.case("target", TARGET, lab.target.port, addrs, jump=via),
    ])  # fmt: skip
    # (a) from where the client runs: the bastion answers, the target cannot be reached.
    assert _inet(direct_bastion) == {"127.0.0.1/8", f"{BASTION}/30", "10.254.2.1/30"}
    assert direct_target == {
        "error": "OverlayctlError",
        "message": f"target ({TARGET}): SSH port {lab.target.port} unreachable: "
        "network unreachable",
    }
    # (b) through the jump host: the command ran on the target, in its namespace.
    assert _inet(through) == {"127.0.0.1/8", f"{TARGET}/30"}


def test_a_jump_host_checks_the_target_key_strictly(jump_lab: JumpLab, tmp_path: Path) -> None:
    lab = jump_lab
    only_bastion = tmp_path / "kh"
    only_bastion.write_text(lab.bastion.known_hosts.read_text())
    via = ["root", BASTION, lab.bastion.port]
    (result,) = lab.run([lab.case("target", TARGET, lab.target.port, ["true"], jump=via,
                                  known_hosts=str(only_bastion))])  # fmt: skip
    assert result["error"] == "HostKeyRejected"
    assert result["message"].startswith(
        f"[{TARGET}]:{lab.target.port}: host key not in known_hosts"
    )
