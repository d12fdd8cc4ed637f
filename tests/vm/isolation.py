"""A network namespace holding libvirtd, virtlogd, their VMs and dnsmasq, and nothing else.

Why: the VMs must have no way out of this machine (no NAT bridge, no route in the root
namespace), and the run must leave nothing behind. Everything of libvirt lives in a namespace
made for one run (unique name), so its bridges, taps and firewall rules exist only there, and
its state (the folders under /etc, /run, /var/lib, /var/cache and /var/log that a system
libvirtd uses) is a per-run folder bind-mounted over those paths in a private mount namespace:
the root namespace never sees a libvirt socket, network or domain. The copy of /etc/libvirt has
no `default` network at all (libvirt's NAT network can never be started), and its qemu.conf
runs QEMU as root without cgroups or a security driver (a private daemon for a test).

Cleanup never names a program: every process whose network namespace is ours is killed by PID
(SIGTERM, then SIGKILL after a bounded wait), then the namespace and the run folder go.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

# A system libvirtd's state, each replaced by a per-run folder inside the mount namespace.
LIBVIRT_DIRS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
                "/var/log/libvirt")  # fmt: skip
QEMU_CONF = (
    "\n# overlayctl's VM tests (tests/vm/isolation.py): a private daemon in a namespace\n"
    'user = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n'
)


def backing(run: Path, target: str) -> Path:
    """The per-run folder mounted over TARGET."""
    return run / "libvirt" / target.strip("/").replace("/", "_")


def prepare_libvirt_dirs(run: Path) -> None:
    """Per-run copies: /etc/libvirt without the `default` network, the rest empty but shaped."""
    for target in LIBVIRT_DIRS:
        dest = backing(run, target)
        if target == "/etc/libvirt":
            shutil.copytree(target, dest, symlinks=True)
            networks = dest / "qemu" / "networks"
            shutil.rmtree(networks, ignore_errors=True)
            (networks / "autostart").mkdir(parents=True)
            with open(dest / "qemu.conf", "a") as conf:
                conf.write(QEMU_CONF)
        else:
            dest.mkdir(parents=True)
            if Path(target).is_dir():  # the package's empty subfolders (images, qemu, ...)
                for sub in Path(target).rglob("*"):
                    if sub.is_dir() and not sub.is_symlink():
                        (dest / sub.relative_to(target)).mkdir(parents=True, exist_ok=True)


def bind_libvirt_dirs(run: Path) -> None:
    """Inside the private mount namespace only: each per-run folder over its system path."""
    for target in LIBVIRT_DIRS:
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(backing(run, target)), target], check=True,
                       timeout=30)  # fmt: skip


def start_daemons(run: Path, say: Callable[[str], None]) -> dict[str, int]:
    """virtlogd and libvirtd as daemons of this namespace; their PIDs (also in RUN/*.pid)."""
    pids = {}
    for daemon, socket in (("virtlogd", "virtlogd-sock"), ("libvirtd", "libvirt-sock")):
        pidfile = run / f"{daemon}.pid"
        subprocess.run([daemon, "-d", "-p", str(pidfile)], check=True, timeout=60)
        sock = Path("/run/libvirt") / socket
        ready = [pidfile, sock]
        wait_until(lambda ready=ready: all(p.exists() for p in ready), 60, f"{daemon}'s {sock}")
        pids[daemon] = int(pidfile.read_text().split()[0])
        say(f"{daemon} started, PID {pids[daemon]}")
    return pids


def stop_daemons(run: Path) -> None:
    """libvirtd, then virtlogd, by the PIDs they recorded, if they are still ours."""
    own = net_inode(os.getpid())
    for daemon in ("libvirtd", "virtlogd"):
        pidfile = run / f"{daemon}.pid"
        if pidfile.is_file():
            pid = int(pidfile.read_text().split()[0] or 0)
            if pid and net_inode(pid) == own:
                terminate([pid])


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not there after {timeout:.0f} s")
        time.sleep(every)


def net_inode(pid: int) -> int | None:
    """PID's network namespace (the inode of /proc/PID/ns/net), or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pids_in_netns(inode: int) -> list[int]:
    """Every process whose network namespace is INODE."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and net_inode(int(entry)) == inode:
            found.append(int(entry))
    return found


def terminate(pids: list[int], grace: float = 15.0) -> None:
    """SIGTERM to PIDS, then SIGKILL to those still alive after GRACE seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Namespace:
    """`ip netns add NAME` with only a loopback: no device, so no route leads anywhere else."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        self.inode = os.stat(f"/run/netns/{name}").st_ino

    def exec_argv(self, argv: list[str]) -> list[str]:
        """ARGV run in the namespace, in a private mount namespace of its own."""
        return ["ip", "netns", "exec", self.name, "unshare", "--mount", "--propagation",
                "private", "--", *argv]  # fmt: skip

    def routes(self) -> str:
        done = subprocess.run(["ip", "-n", self.name, "-4", "route", "show"],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        return done.stdout

    def close(self) -> list[int]:
        """Kill every process left in the namespace (by PID), then delete it. The PIDs killed."""
        left: list[int] = []
        for _ in range(5):  # a dying daemon may have just started a child
            pids = pids_in_netns(self.inode)
            if not pids:
                break
            left += pids
            terminate(pids)
        subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=30)
        return left


class PeakMemory:
    """The peak of the summed resident memory of some processes, sampled every second."""

    def __init__(self, select: Callable[[], list[int]]) -> None:
        self.select = select
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak_kib = max(self.peak_kib, sum(rss_kib(pid) for pid in self.select()))


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """ROOT's children, their children, and so on (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found
