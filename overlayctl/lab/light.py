"""Light lab hosts: a network namespace plus private mount, UTS and PID namespaces, no systemd.

A light host starts in about a tenth of a second, so agent and data-plane tests can use many.
Each has its own /etc, /var/lib, /var/log, /root and /tmp (overlays over the machine's: what is
there stays visible, what a host writes stays its own), a fresh /run, a read-only /proc/sys
except /proc/sys/net, and its own hostname. Its PID 1 is a small shell that reaps children;
killing it ends everything in the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from overlayctl.errors import OverlayctlError
from overlayctl.lab import netns, state
from overlayctl.lab.system import require_root_linux, require_tools

_INIT = r"""
set -eu
base=$1; name=$2
for d in etc var/lib var/log root tmp; do
  n=$(echo "$d" | tr / _)
  mkdir -p "$base/$n.upper" "$base/$n.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$base/$n.upper,workdir=$base/$n.work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/netns /run/sshd
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
hostname "$name"
echo "$name" > /etc/hostname
touch "$base/ready"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $! || true; done
"""


class LightHost:
    """One light host. `run` executes a program inside all of its namespaces."""

    def __init__(self, name: str, address: str, netns_name: str, base: Path) -> None:
        self.name = name
        self.address = address
        self.netns = netns_name
        self.base = base
        self._unshare: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # PID 1 of the host, as seen from the machine

    def start(self, timeout: float = 10.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        argv = netns.exec_argv(
            self.netns,
            [
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                _INIT,
                "init",
                str(self.base),
                self.name,
            ],
        )
        log = open(self.base / "init.log", "wb")  # noqa: SIM115 - kept open by the child
        self._unshare = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not (self.base / "ready").exists():
            if self._unshare.poll() is not None or time.monotonic() > deadline:
                detail = (self.base / "init.log").read_text().strip()
                raise OverlayctlError(f"light host {self.name} did not start: {detail}")
            time.sleep(0.02)
        self.pid = _only_child(self._unshare.pid)

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """ARGV run inside this host's namespaces (network, mount, UTS, PID)."""
        if self.pid is None:
            raise OverlayctlError(f"light host {self.name} is not running")
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-u", "-p", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.enter_argv(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise OverlayctlError(
                f"{self.name}: `{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a long-running program inside the host (the caller stops it, by PID)."""
        return subprocess.Popen(self.enter_argv(argv), **kwargs)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # PID 1 of the host: ends every process in it
        if self._unshare is not None:
            try:
                self._unshare.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait(timeout=5)
        self.pid = None


class LightLab:
    """A LAN (bridge in its own namespace) with light hosts on it. Use as a context manager."""

    def __init__(self, name: str, subnet: str = "192.168.255.0/24") -> None:
        require_root_linux("light lab hosts")
        require_tools("ip", "unshare", "nsenter")
        self.name = state.check_name(name)
        self.subnet = subnet
        self.switch = f"ovl-{name}-lan"
        # Not under /tmp, /etc, /var/lib, /var/log, /root or /run: a host mounts over those.
        self.base = Path(tempfile.mkdtemp(prefix=f"overlayctl-light-{name}-", dir="/var/tmp"))
        self.hosts: dict[str, LightHost] = {}
        self._extra_netns: list[str] = []
        self._prefix = int(subnet.split("/")[1])
        netns.create_switch(self.switch)

    def add_host(self, name: str, address: str | None = None) -> LightHost:
        """Create, plug in and start one host (addresses follow the full lab's: .154, .155...)."""
        if address is None:
            address = state.addresses(self.subnet, len(self.hosts) + 1)[1][-1]
        ns = f"ovl-{self.name}-{name}"
        netns.add(ns)
        self._extra_netns.append(ns)
        netns.attach(self.switch, f"p-{name}", ns, f"{address}/{self._prefix}")
        host = LightHost(name, address, ns, self.base / name)
        self.hosts[name] = host
        host.start()
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
        for ns in self._extra_netns:
            netns.delete(ns)
        netns.delete(self.switch)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LightLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _only_child(pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        children = path.read_text().split() if path.exists() else []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise OverlayctlError(f"process {pid} has no child after {timeout} s")
