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


def start_sshd(workdir: Path) -> LocalSshd:
    workdir.mkdir(parents=True, exist_ok=True)
    host_line = write_keypair(workdir / "host_ed25519", "test-host")
    client_line = write_keypair(workdir / "client_ed25519", "test-client")
    (workdir / "authorized_keys").write_text(client_line + "\n")
    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\n"
        "UsePAM no\nKbdInteractiveAuthentication no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    log = open(workdir / "sshd.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            raise RuntimeError((workdir / "sshd.log").read_text())
        time.sleep(0.05)
    known = workdir / "known_hosts"
    known.write_text(known_hosts_line([f"[127.0.0.1]:{port}"], host_line) + "\n")
    return LocalSshd(port, workdir / "client_ed25519", known, host_line, proc)
