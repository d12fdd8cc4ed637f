"""A real OpenSSH server on 127.0.0.1 for the tests of overlayctl.remote (stopped by PID)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from overlayctl.lab.sshkeys import known_hosts_line, write_keypair

SSHD = "/usr/sbin/sshd"


@dataclass
class LocalSshd:
    port: int
    client_key: Path
    known_hosts: Path
    host_key_line: str
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(
    workdir: Path, netns: str | None = None, address: str = "127.0.0.1", user_keys: bool = False
) -> LocalSshd:
    """sshd on ADDRESS, inside network namespace NETNS when given (the caller made it).

    USER_KEYS: also accept the keys in each user's own ~/.ssh/authorized_keys, for tests that log
    in as a user they created (sshd reads that file as the user, who cannot read WORKDIR's).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    host_line = write_keypair(workdir / "host_ed25519", "test-host")
    client_line = write_keypair(workdir / "client_ed25519", "test-client")
    (workdir / "authorized_keys").write_text(client_line + "\n")
    port = _free_port()
    config = workdir / "sshd_config"
    keys = f"{workdir / 'authorized_keys'}" + (" .ssh/authorized_keys" if user_keys else "")
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {workdir / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {keys}\nPidFile {workdir / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\n"
        "UsePAM no\nKbdInteractiveAuthentication no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    log_path = workdir / "sshd.log"
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # sshd logs this line once its socket listens (works from any namespace).
        if b"Server listening on" in log_path.read_bytes():
            break
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text())
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not listen within 10 s: {log_path.read_text()}")
    known = workdir / "known_hosts"
    known.write_text(known_hosts_line([f"[{address}]:{port}"], host_line) + "\n")
    return LocalSshd(port, workdir / "client_ed25519", known, host_line, proc)
