"""Full lab hosts: Debian with systemd as PID 1 under systemd-nspawn, on an overlay of the template.

Each host has its own network namespace (plugged into the lab LAN), its own cgroup, its own
writable layer, SSH host keys and machine-id. The nspawn process is started in a new session so
that it outlives the `overlayctl lab up` that started it; `down` stops it by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from overlayctl.lab import cgroups
from overlayctl.lab.sshkeys import write_keypair
from overlayctl.lab.state import HostRecord
from overlayctl.lab.system import run

NSPAWN_ENV = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}


def host_dir(lab_dir: Path, host: str) -> Path:
    return lab_dir / "hosts" / host


def mount_root(template_rootfs: Path, base: Path) -> Path:
    """Mount an overlay of the template at BASE/root (writable layer BASE/upper)."""
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    root = base / "root"
    if not os.path.ismount(root):
        opts = f"lowerdir={template_rootfs},upperdir={base / 'upper'},workdir={base / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)])
    return root


def seed_host(root: Path, hostname: str, authorized_key: str) -> str:
    """Write what makes a host itself before its first boot; returns its SSH host key line."""
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    host_key = write_keypair(root / "etc/ssh/ssh_host_ed25519_key", f"root@{hostname}")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_key + "\n")
    auth.chmod(0o600)
    # Only the ed25519 host key exists; tell sshd so it does not complain about the others.
    conf = root / "etc/ssh/sshd_config.d/lab.conf"
    conf.write_text(
        "# overlayctl lab: one host key, keys only\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PasswordAuthentication no\n"
    )
    return host_key


def docker_dir(host: HostRecord) -> Path:
    """HOST's /var/lib/docker, a folder of this machine's beside its layers: docker needs a
    backing filesystem other than overlayfs for its overlay2 driver, and fell back to vfs on
    the overlay root (a copy of the image per container: a `docker run` took 0.6 s on an idle
    host, 0.3 s with overlay2). Kept across the host's reboots, like a disk."""
    return Path(host.root).parent / "docker"


def boot(host: HostRecord, console_log: Path) -> int:
    """Start systemd-nspawn for HOST from its own cgroup; returns nspawn's PID."""
    cgroups.create(host.cgroup)
    docker_dir(host).mkdir(mode=0o710, exist_ok=True)
    argv = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={host.root}",
        f"--machine={host.name}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{host.netns}",
        f"--bind={docker_dir(host)}:/var/lib/docker",
        "--capability=CAP_NET_ADMIN",
        "--system-call-filter=add_key keyctl bpf",
        "--console=read-only",
    ]
    with open(console_log, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **NSPAWN_ENV},
            start_new_session=True,
            preexec_fn=lambda: cgroups.join(host.cgroup),  # noqa: PLW1509 - runs before exec only
        )
    return proc.pid


def stop(host: HostRecord, timeout: float = 20.0) -> None:
    """Orderly poweroff (nspawn turns SIGTERM into one), then SIGKILL what is left in the cgroup."""
    if is_running(host):
        os.kill(host.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(host.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    cgroups.kill_all(host.cgroup)
    if is_running(host):
        os.kill(host.pid, signal.SIGKILL)  # type: ignore[arg-type]
    _reap(host.pid)


def is_running(host: HostRecord) -> bool:
    """True while HOST's recorded PID is alive and still the nspawn of this host's root.

    The check of the command line keeps a reused PID from being signalled by mistake.
    """
    if not host.pid or not _alive(host.pid):
        return False
    try:
        cmdline = Path(f"/proc/{host.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"systemd-nspawn" in cmdline[0] and f"--directory={host.root}".encode() in cmdline


def unmount_root(base: Path) -> None:
    root = base / "root"
    if os.path.ismount(root):
        run(["umount", str(root)], check=False)
        if os.path.ismount(root):
            run(["umount", "--lazy", str(root)], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers signal 0: look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _reap(pid: int | None) -> None:
    if not pid:
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
