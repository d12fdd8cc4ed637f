"""A Vagrant libvirt box of Debian bookworm, built here with debootstrap, then cached.

Why build one: this machine reaches Debian's mirror but not Vagrant Cloud, and the VMs it boots
have no route out (tests/vm/vagrant_page.py keeps them in a network namespace), so nothing can be
downloaded or installed inside them. The box is therefore a plain Debian host that already carries
what `overlayctl init` would install on Debian (INIT_PACKAGES: the packages phase only installs
what is missing, so on this box it installs nothing), like the lab template does; none of it is
configured or enabled: that stays overlayctl's job. It also carries the busybox image tar the
lab uses, so `verify --import-from` needs no registry.

It boots for real: an MBR with GRUB (boot.img + core.img written into the gap before the one
ext4 partition, as grub-install does), the Debian cloud kernel and its initramfs. Vagrant's
conventions: a `vagrant` user with Vagrant's insecure public key (read from the installed
vagrant) and passwordless sudo. Every clone gets its own identity: /etc/machine-id is empty
(systemd makes one at first boot; a shared one gives every VM's VXLAN device the same MAC) and
SSH host keys are made at first boot. systemd-networkd takes DHCP on any interface through
99-overlayctl-dhcp.network, which sorts after Vagrant's 50-vagrant-*.network, so the private
network keeps Vagrant's static address. AppArmor is installed, as on a stock Debian host, so
docker's profile loads.

No loop device and no mount: the partition table is written by sfdisk into a file,
`mkfs.ext4 -d` fills the partition at its offset, the boot code is written with plain file I/O.
The cache key covers everything above, so the box is rebuilt only when its recipe changes.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from overlayctl.errors import EnvironmentProblem, OverlayctlError
from overlayctl.lab import template
from overlayctl.lab.system import require_root_linux, require_tools, run

CACHE_ROOT = Path(os.environ.get("OVERLAYCTL_BOX_CACHE", "/var/cache/overlayctl/box"))
BOX_PREFIX = "overlayctl-bookworm-"
# What `overlayctl init` installs on a Debian host (overlayctl/phases/packages.py, every role);
# the VMs cannot reach a mirror, so the box carries them. A unit test keeps the two in step.
INIT_PACKAGES = (
    "iptables",
    "iproute2",
    "etcd-client",
    "iputils-ping",
    "etcd-server",
    "python3",
    "python3-venv",
    "docker.io",
)
# A bootable Debian host that Vagrant can drive.
SYSTEM_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "grub-pc-bin",
    "openssh-server",
    "sudo",
    "apparmor",
    "procps",
    "ca-certificates",
    "busybox-static",
)
PACKAGES = (*SYSTEM_PACKAGES, *INIT_PACKAGES)
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")
DISK_GIB = 6  # the root filesystem's size; qcow2 stores only what is used
PARTITION_START = 2048  # sectors: GRUB's core.img lives in the gap before it
KERNEL_ARGS = "ro net.ifnames=0 console=tty0 console=ttyS0,115200"
# Bump when the customisation below changes: it is part of the cache key.
CUSTOMISATION_VERSION = 1

_DHCP_NETWORK = "[Match]\nName=eth*\n\n[Network]\nDHCP=ipv4\n"
# Boot must not wait 2 minutes for a private interface that has no address yet.
_WAIT_ONLINE = (
    "[Service]\nExecStart=\n"
    "ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n"
)  # fmt: skip
# Debian makes host keys when openssh-server is installed, never at boot; the box has none.
_SSH_KEYS = (
    "[Service]\nExecStartPre=\n"
    "ExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n"
)
_BOX_VAGRANTFILE = (
    "# Box built by `overlayctl lab box` (overlayctl/lab/box.py). Provider settings (driver,\n"
    "# CPU model, networks) are the project Vagrantfile's: nothing is chosen here.\n"
    'Vagrant.configure("2") do |config|\n'
    '  config.ssh.username = "vagrant"\n'
    "end\n"
)


@dataclass(frozen=True)
class Box:
    """A finished box: FILE is what `vagrant box add --name NAME FILE` takes."""

    key: str
    name: str
    file: Path
    build_seconds: float


def vagrant_public_key() -> str:
    """Vagrant's insecure public key, from the installed vagrant (Debian's or HashiCorp's)."""
    patterns = (
        "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
        "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
        "/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub",
    )
    for pattern in patterns:
        for path in sorted(glob.glob(pattern), reverse=True):
            return Path(path).read_text()
    raise EnvironmentProblem(
        "Vagrant's insecure public key (keys/vagrant.pub) not found: install vagrant "
        "(`make deps`); the box authorises it for the vagrant user, as every box does"
    )


def cache_key(pubkey: str | None = None) -> str:
    """Digest of the recipe: suite, architecture, packages, units, customisation, Vagrant's key."""
    spec = {
        "suite": template.SUITE,
        "arch": platform.machine(),
        "packages": sorted(PACKAGES),
        "disabled": sorted(template.DISABLED_UNITS),
        "masked": sorted(MASKED_UNITS),
        "disk_gib": DISK_GIB,
        "kernel_args": KERNEL_ARGS,
        "custom": CUSTOMISATION_VERSION,
        "files": [_DHCP_NETWORK, _WAIT_ONLINE, _SSH_KEYS, _BOX_VAGRANTFILE],
        "vagrant_key": hashlib.sha256((pubkey or vagrant_public_key()).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def box_dir(key: str) -> Path:
    return CACHE_ROOT / f"box-{key}"


def find_box(key: str | None = None) -> Box | None:
    """The cached box for the current recipe, if it was built completely."""
    key = key or cache_key()
    done = box_dir(key) / "complete"
    if not done.is_file():
        return None
    seconds = float(json.loads(done.read_text()).get("build_seconds", 0))
    return Box(key, BOX_PREFIX + key, box_dir(key) / "bookworm.box", seconds)


def build_box(*, force: bool = False, log: Path | None = None) -> Box:
    """Build (or reuse) the box. Concurrent callers wait for one build under a file lock."""
    require_root_linux("building the Vagrant box")
    require_tools("debootstrap", "systemctl", "chroot", "sfdisk", "mkfs.ext4", "qemu-img", "tar")
    if platform.machine() != "x86_64":
        raise EnvironmentProblem(f"the box is amd64 (GRUB for BIOS); this is {platform.machine()}")
    pubkey = vagrant_public_key()
    key = cache_key(pubkey)
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = find_box(key)
        if existing and not force:
            return existing
        final = box_dir(key)
        build_log = log or (CACHE_ROOT / f"build-{key}.log")

        def build(staging: Path) -> None:
            rootfs = staging / "rootfs"
            _debootstrap(rootfs, template.debian_mirror(), build_log)
            fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"overlayctl-box-{key}"))
            _customise(rootfs, pubkey, fs_uuid)
            boot_img, core_img = _grub_images(rootfs, staging)
            raw = staging / "disk.raw"
            _disk_image(raw, rootfs, fs_uuid, boot_img, core_img)
            shutil.rmtree(rootfs)
            _pack(raw, staging)

        seconds = template.staged_build(CACHE_ROOT, key, final, build)
        _remove_stale_boxes(keep=final)
        return Box(key, BOX_PREFIX + key, final / "bookworm.box", seconds)


def _logged(argv: list[str], log: Path, timeout: float) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise OverlayctlError(
                f"`{argv[0]}` did not finish in {timeout:.0f} s; see {log}"
            ) from None
    if proc.returncode != 0:
        raise OverlayctlError(f"`{argv[0]}` failed (exit {proc.returncode}); see {log}")


def _debootstrap(rootfs: Path, mirror: str, log: Path) -> None:
    log.write_text("")
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), template.SUITE,
            str(rootfs), mirror]  # fmt: skip
    _logged(argv, log, timeout=1800)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _customise(rootfs: Path, pubkey: str, fs_uuid: str) -> None:
    """Vagrant's user and key, a clone-safe identity, networkd, GRUB's files, init's units."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    _write(rootfs / "etc/hostname", "bookworm\n")
    _write(rootfs / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tbookworm\n")
    _write(rootfs / "etc/fstab", f"UUID={fs_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    run(["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash", "vagrant"])
    ssh_dir = rootfs / "home/vagrant/.ssh"
    _write(ssh_dir / "authorized_keys", pubkey.strip() + "\n", 0o600)
    ssh_dir.chmod(0o700)
    run(["chroot", str(rootfs), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    _write(rootfs / "etc/sudoers.d/vagrant", "vagrant ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    network = rootfs / "etc/systemd"
    _write(network / "network/99-overlayctl-dhcp.network", _DHCP_NETWORK)
    _write(network / "system/systemd-networkd-wait-online.service.d/any.conf", _WAIT_ONLINE)
    _write(network / "system/ssh.service.d/host-keys.conf", _SSH_KEYS)
    systemctl = ["systemctl", f"--root={rootfs}"]
    run([*systemctl, "disable", *template.DISABLED_UNITS])
    run([*systemctl, "mask", *MASKED_UNITS])
    run([*systemctl, "enable", "ssh.service", "systemd-networkd.service"])
    grub = rootfs / "boot/grub"
    shutil.copytree(rootfs / "usr/lib/grub/i386-pc", grub / "i386-pc", dirs_exist_ok=True)
    _write(grub / "grub.cfg", grub_config(fs_uuid))
    template._write_busybox_image(rootfs)  # the lab's verify image, at the same path
    run(["chroot", str(rootfs), "apt-get", "clean"])
    for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()  # no mirror is reachable from the VMs; stale lists would only mislead


def grub_config(fs_uuid: str) -> str:
    """GRUB's menu: the kernel Debian links at /vmlinuz, root by filesystem UUID."""
    return (
        "set timeout=1\nset default=0\ninsmod part_msdos\ninsmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
        "menuentry 'Debian GNU/Linux (overlayctl box)' {\n"
        f"  linux /vmlinuz root=UUID={fs_uuid} {KERNEL_ARGS}\n"
        "  initrd /initrd.img\n}\n"
    )


def _grub_images(rootfs: Path, out: Path) -> tuple[Path, Path]:
    """boot.img (the MBR's code) and a core.img that finds /boot/grub on partition 1."""
    if not (rootfs / "vmlinuz").exists() or not (rootfs / "initrd.img").exists():
        raise OverlayctlError("the kernel package left no /vmlinuz or /initrd.img in the box")
    argv = ["chroot", str(rootfs), "grub-mkimage", "-O", "i386-pc", "-o", "/boot/core.img",
            "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos", "ext2"]  # fmt: skip
    run(argv)
    core = out / "core.img"
    shutil.move(rootfs / "boot/core.img", core)
    boot = out / "boot.img"
    shutil.copy(rootfs / "usr/lib/grub/i386-pc/boot.img", boot)
    return boot, core


def write_boot_code(raw: Path, boot_img: bytes, core_img: bytes) -> None:
    """What grub-install does on a BIOS disk with an MBR gap: boot.img's code in sector 0 (the
    partition table and signature after byte 440 stay), core.img from sector 1 on. boot.img
    loads sector 1 and core.img's first sector loads the rest (grub-mkimage sets its length)."""
    if len(boot_img) != 512:
        raise OverlayctlError(f"boot.img is {len(boot_img)} bytes, not one sector")
    if 512 + len(core_img) > PARTITION_START * 512:
        raise OverlayctlError(f"core.img ({len(core_img)} bytes) does not fit before the partition")
    with open(raw, "r+b") as disk:
        disk.write(boot_img[:440])
        disk.seek(512)
        disk.write(core_img)


def _disk_image(raw: Path, rootfs: Path, fs_uuid: str, boot: Path, core: Path) -> None:
    size = DISK_GIB << 30
    with open(raw, "wb") as disk:
        disk.truncate(size)
    run(["sfdisk", "--quiet", str(raw)], input_text=f"label: dos\nstart={PARTITION_START}, "
        "type=83, bootable\n")  # fmt: skip
    offset = PARTITION_START * 512
    fs_kib = (size - offset) // 1024
    run(["mkfs.ext4", "-F", "-q", "-L", "root", "-U", fs_uuid, "-d", str(rootfs),
         "-E", f"offset={offset}", str(raw), f"{fs_kib}k"], timeout=900)  # fmt: skip
    write_boot_code(raw, boot.read_bytes(), core.read_bytes())
    boot.unlink()
    core.unlink()


def metadata() -> dict[str, object]:
    """The box's metadata.json (vagrant-libvirt's format: one qcow2 image, size in GiB)."""
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB}


def _pack(raw: Path, staging: Path) -> None:
    content = staging / "content"
    content.mkdir()
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(content / "box.img")], timeout=900)
    raw.unlink()
    (content / "metadata.json").write_text(json.dumps(metadata()) + "\n")
    (content / "Vagrantfile").write_text(_BOX_VAGRANTFILE)
    run(["tar", "-C", str(content), "-cf", str(staging / "bookworm.box"),
         "metadata.json", "Vagrantfile", "box.img"], timeout=900)  # fmt: skip
    shutil.rmtree(content)


def _remove_stale_boxes(keep: Path) -> None:
    for old in CACHE_ROOT.glob("box-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
