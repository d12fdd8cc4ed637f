"""The lab's template root filesystem: Debian bookworm built once with debootstrap, then cached.

The cache key covers the package list, the suite, the architecture and the customisation below,
so the template is rebuilt only when one of them changes. The mirror is read from this machine's
apt sources at run time; no mirror host name is written anywhere in the project.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from overlayctl.errors import EnvironmentProblem, OverlayctlError
from overlayctl.lab.system import require_root_linux, require_tools, run

SUITE = "bookworm"
CACHE_ROOT = Path(os.environ.get("OVERLAYCTL_LAB_CACHE", "/var/cache/overlayctl/lab"))

# What every lab host has installed. Only sshd is enabled; configuring the rest is overlayctl's job.
PACKAGES = (
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "etcd-server",
    "etcd-client",
    "docker.io",
    "iptables",
    "iproute2",
    "iputils-ping",
    "python3",
    "python3-venv",
    "ca-certificates",
    "curl",
    "procps",
    "busybox-static",
    "iperf3",
)
# Installed units that stay disabled until overlayctl configures them.
DISABLED_UNITS = ("etcd.service", "docker.service", "docker.socket", "containerd.service")
# Units that cannot work in a container and would only mark the host "degraded".
MASKED_UNITS = (
    "systemd-remount-fs.service",
    "e2scrub_reap.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
)
BUSYBOX_IMAGE = "/usr/local/share/overlayctl-lab/busybox.tar"
BUSYBOX_IMAGE_TAG = "lab/busybox:1"
# Bump when the customisation below changes: it is part of the cache key.
CUSTOMISATION_VERSION = 1


@dataclass(frozen=True)
class Template:
    """A finished template: `rootfs` is read-only lower layer for every host."""

    key: str
    rootfs: Path


def cache_key() -> str:
    spec = {
        "suite": SUITE,
        "arch": platform.machine(),
        "packages": sorted(PACKAGES),
        "disabled": sorted(DISABLED_UNITS),
        "masked": sorted(MASKED_UNITS),
        "custom": CUSTOMISATION_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def template_path(key: str | None = None) -> Path:
    return CACHE_ROOT / f"template-{key or cache_key()}"


def find_template() -> Template | None:
    """The cached template for the current package list, if it was built completely."""
    path = template_path()
    if (path / "complete").is_file():
        return Template(cache_key(), path / "rootfs")
    return None


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI this machine's apt uses for the main suite (not -security)."""
    for uri, suites in _apt_source_entries(sources_dir):
        if "security" in uri:
            continue
        if SUITE in suites or any(s in ("stable",) for s in suites):
            return uri
    raise EnvironmentProblem(
        f"no Debian mirror for '{SUITE}' found in {sources_dir}/sources.list(.d): "
        "the lab template is built from the mirror apt already uses"
    )


def _apt_source_entries(sources_dir: Path) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    deb822 = sorted((sources_dir / "sources.list.d").glob("*.sources"))
    for path in deb822:
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    one_line = [
        sources_dir / "sources.list",
        *sorted((sources_dir / "sources.list.d").glob("*.list")),
    ]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")] if line.strip() else []
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    return entries


def build_template(*, force: bool = False, log: Path | None = None) -> Template:
    """Build (or reuse) the template. Concurrent callers wait for one build under a file lock."""
    require_root_linux("building the lab template")
    require_tools("debootstrap", "systemctl")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = find_template()
        if existing and not force:
            return existing
        key = cache_key()
        final = template_path(key)
        build_log = log or (CACHE_ROOT / f"build-{key}.log")

        def build(staging: Path) -> None:
            _debootstrap(staging / "rootfs", debian_mirror(), build_log)
            _customise(staging / "rootfs")

        staged_build(CACHE_ROOT, key, final, build)
        _remove_stale_templates(keep=final)
        return Template(key, final / "rootfs")


def staged_build(cache: Path, key: str, final: Path, build: Callable[[Path], None]) -> float:
    """BUILD(staging) in a fresh staging folder of CACHE (its `rootfs/` made), then the folder
    becomes FINAL with a `complete` marker; on any error it goes, so a cache entry is either
    whole or absent. The caller holds the build lock. Returns the build's seconds."""
    staging = cache / f".staging-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "rootfs").mkdir(parents=True)
    started = time.monotonic()
    try:
        build(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = round(time.monotonic() - started, 1)
    (staging / "complete").write_text(json.dumps({"key": key, "build_seconds": seconds}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return seconds


def _debootstrap(rootfs: Path, mirror: str, log: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(rootfs),
        mirror,
    ]
    with open(log, "w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=1800)
    if proc.returncode != 0:
        raise OverlayctlError(f"debootstrap failed (exit {proc.returncode}); see {log}")


def _customise(rootfs: Path) -> None:
    # Every host gets its own SSH host keys and machine-id; none may come from the template.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    unit_src = resources.files("overlayctl.lab") / "assets" / "lab-cgroup-rw.service"
    unit_dst = rootfs / "etc/systemd/system/lab-cgroup-rw.service"
    unit_dst.write_bytes(unit_src.read_bytes())
    systemctl = ["systemctl", f"--root={rootfs}"]
    run([*systemctl, "disable", *DISABLED_UNITS])
    run([*systemctl, "mask", *MASKED_UNITS])
    run([*systemctl, "enable", "lab-cgroup-rw.service", "ssh.service"])
    _write_busybox_image(rootfs)
    run(["chroot", str(rootfs), "apt-get", "clean"])


def _write_busybox_image(rootfs: Path) -> None:
    """A tar that `docker import` turns into an image: busybox plus a link per applet."""
    work = rootfs / "tmp/busybox-image"
    shutil.rmtree(work, ignore_errors=True)
    (work / "bin").mkdir(parents=True)
    shutil.copy2(rootfs / "bin/busybox", work / "bin/busybox")
    applets = run(["chroot", str(rootfs), "/bin/busybox", "--list"]).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (work / "bin" / applet).symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        (work / d).mkdir(exist_ok=True)
    target = rootfs / BUSYBOX_IMAGE.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "tar",
            "-C",
            str(work),
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-cf",
            str(target),
            ".",
        ]
    )
    shutil.rmtree(work)


def _remove_stale_templates(keep: Path) -> None:
    for old in CACHE_ROOT.glob("template-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
