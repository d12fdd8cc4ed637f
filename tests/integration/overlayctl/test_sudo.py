"""`ssh.sudo: true`: overlayctl logs in as a user who is not root and runs everything through
`sudo -n`. Against a real sshd on 127.0.0.1 and a user made for the test (passwordless sudo
from a file in /etc/sudoers.d): with sudo commands run as root and files land root-owned;
without it the same login acts as the user, and the root check says so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl.remote.root import root_problem
from overlayctl.remote.ssh import Remote, RemoteCommandFailed, SshTarget
from tests.conftest import unique_name
from tests.sshd import LocalSshd, start_sshd

pytestmark = pytest.mark.lab

SUDOERS_D = Path("/etc/sudoers.d")


@dataclass
class SudoUser:
    name: str
    uid: int
    gid: int
    home: Path
    sudoers: Path  # its NOPASSWD rule
    sshd: LocalSshd

    def target(self, sudo: bool) -> SshTarget:
        return SshTarget(
            name="local", address="127.0.0.1", port=self.sshd.port, user=self.name,
            key=self.sshd.client_key, known_hosts=self.sshd.known_hosts, sudo=sudo,
            connect_timeout=5,
        )  # fmt: skip


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def _processes_of(uid: int) -> list[int]:
    """PIDs whose real UID is UID (the test user's SSH sessions)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uids = next(ln for ln in status.read_text().splitlines() if ln.startswith("Uid:"))
        except (OSError, StopIteration):
            continue  # ended meanwhile
        if int(uids.split()[1]) == uid:
            found.append(int(status.parent.name))
    return found


def _remove_user(name: str, uid: int) -> None:
    """userdel refuses while the user has processes: its sessions end a moment after the
    connection closes, so wait (bounded), then kill what is left of them (by PID), then remove
    the user and its home."""
    deadline = time.monotonic() + 10
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _processes_of(uid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _run("userdel", "--remove", name)


@pytest.fixture
def sudo_user(tmp_path: Path) -> Iterator[SudoUser]:
    """A new user with passwordless sudo and the test's client key; sshd accepting it. The
    user (with its home), its sudoers file and the sshd are removed afterwards."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and openssh-server")
    if shutil.which("sudo") is None or shutil.which("visudo") is None:
        pytest.skip("needs sudo (apt-get install sudo)")
    name = unique_name("ovlsu")
    sudoers = SUDOERS_D / name  # no dot in the name: sudo skips files that have one
    sshd = start_sshd(tmp_path / "sshd", user_keys=True)
    made_user = False
    try:
        # "*": no password, but not a locked account (sshd without PAM refuses those).
        _run("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name)
        made_user = True
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text((tmp_path / "sshd/authorized_keys").read_text())
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        rule = tmp_path / "sudoers"
        rule.write_text(f"{name} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        _run("visudo", "-cqf", str(rule))  # never install a file that breaks sudo
        rule.chmod(0o440)
        shutil.copy2(rule, sudoers)
        yield SudoUser(name, entry.pw_uid, entry.pw_gid, home, sudoers, sshd)
    finally:
        sudoers.unlink(missing_ok=True)
        sshd.stop()
        if made_user:
            _remove_user(name, pwd.getpwnam(name).pw_uid)


def test_with_sudo_commands_run_as_root(sudo_user: SudoUser) -> None:
    with Remote(sudo_user.target(sudo=True)) as remote:
        assert remote.run(["id", "-u"]).stdout == "0\n"
        assert remote.run(["id", "-un"]).stdout == "root\n"
        assert remote.run(["sh", "-c", 'echo "$SUDO_USER"']).stdout == f"{sudo_user.name}\n"
        assert remote.script('printf "%s" "$(id -u):$1"', "x y").stdout == "0:x y"
        assert root_problem(remote) is None


def test_with_sudo_put_file_lands_root_owned(sudo_user: SudoUser, tmp_path: Path) -> None:
    """Into a folder only root may enter (tmp_path is 0700 root): the user alone could not."""
    path = tmp_path / "etc" / "thing.conf"
    backups = tmp_path / "backup"
    with Remote(sudo_user.target(sudo=True), backup_root=str(backups)) as remote:
        remote.put_file(str(path), b"through sudo\n", mode=0o640)
        got = remote.read_files([str(path)])[str(path)]
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o640)
    assert path.read_bytes() == b"through sudo\n"
    assert (got.content, got.mode, got.owner) == (b"through sudo\n", 0o640, "root:root")
    marker = backups / (str(path).lstrip("/") + ".absent")  # it did not exist before
    assert marker.stat().st_uid == 0
    assert [p.name for p in path.parent.iterdir()] == ["thing.conf"]  # no temp file left


def test_without_sudo_the_same_login_acts_as_the_user(sudo_user: SudoUser, tmp_path: Path) -> None:
    own = sudo_user.home / "own.conf"
    with Remote(sudo_user.target(sudo=False), backup_root=str(sudo_user.home / "bak")) as remote:
        assert remote.run(["id", "-u"]).stdout == f"{sudo_user.uid}\n"
        assert remote.run(["id", "-un"]).stdout == f"{sudo_user.name}\n"
        owner = f"{sudo_user.name}:{sudo_user.name}"
        remote.put_file(str(own), b"as the user\n", mode=0o600, owner=owner)
        denied = tmp_path / "root-only.conf"
        with pytest.raises(RemoteCommandFailed) as info:
            remote.put_file(str(denied), b"x\n")
        backup = f"{sudo_user.home}/bak{denied}"
        assert re.fullmatch(
            re.escape(f"local: `sh -c <script> {denied} 644 root:root {backup}` failed: ")
            + r"mkdir: cannot create directory '/tmp/[^']*': Permission denied",
            str(info.value),
        ), str(info.value)
        assert root_problem(remote) == (
            f"local (127.0.0.1): logged in as {sudo_user.name} (uid {sudo_user.uid}), not root; "
            "set ssh.sudo: true (with passwordless sudo) or ssh.user: root"
        )
    info = own.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        sudo_user.uid, sudo_user.gid, 0o600,
    )  # fmt: skip
    assert not denied.exists()


def test_sudo_that_wants_a_password_is_named(sudo_user: SudoUser) -> None:
    """Without the NOPASSWD rule `sudo -n` refuses at once: said, not waited on or hidden."""
    sudo_user.sudoers.unlink()
    with Remote(sudo_user.target(sudo=True)) as remote:
        got = remote.run(["id", "-u"], check=False)
        assert (got.code, got.stdout) == (1, "")
        assert root_problem(remote) == (
            f"local (127.0.0.1): cannot act as root through sudo as {sudo_user.name}: "
            "sudo asks for a password; overlayctl needs passwordless sudo (`sudo -n`)"
        )
