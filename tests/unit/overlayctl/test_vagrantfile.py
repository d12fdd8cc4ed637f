"""The Vagrantfile, checked by the real `vagrant validate` (Debian 12 packages vagrant 2.3.4).

`vagrant validate --ignore-provider` loads the Vagrantfile and checks every machine's config
without a hypervisor. When vagrant is not installed the tests are skipped with that reason
(scripts/deps.sh installs it: 14 MB, about 20 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANTFILE = Path(__file__).resolve().parents[3] / "Vagrantfile"
SKIP_REASON = "vagrant is not installed (Debian: apt-get install vagrant; scripts/deps.sh does it)"
# What tests/vm/vagrant_page.py sets on a machine without a usable KVM.
VM_TIER_SETTINGS = {
    "OVERLAYCTL_LIBVIRT_DRIVER": "qemu",
    "OVERLAYCTL_LIBVIRT_CPU_MODEL": "qemu64",
    "OVERLAYCTL_LIBVIRT_TB_CACHE": "128",
    "OVERLAYCTL_LIBVIRT_NETWORK": "isolated",
    "OVERLAYCTL_MEMORY": "768",
    "OVERLAYCTL_CONSOLE_DIR": "/tmp",
}
pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the Vagrantfile in its own folder (validate writes .vagrant/ next to it)."""
    folder = tmp_path_factory.mktemp("vagrant")
    shutil.copy(VAGRANTFILE, folder / "Vagrantfile")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id_ed25519")],
        check=True,
    )
    return folder


def validate(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "VAGRANT_CWD": str(project),
        "VAGRANT_HOME": str(project / "vagrant.d"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "OVERLAYCTL_PUBKEY": str(project / "id_ed25519.pub"),
        **env,
    }
    for name in ("OVERLAYCTL_VMS", "OVERLAYCTL_BOX", "OVERLAYCTL_FAMILY"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run(
        ["vagrant", "validate", "--ignore-provider", "--no-tty"],
        cwd=project, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "machines"),
    [
        ({}, 3),
        ({"OVERLAYCTL_FAMILY": "rhel", "OVERLAYCTL_BOX": "almalinux/9", "OVERLAYCTL_VMS": "5"}, 5),
        (VM_TIER_SETTINGS, 3),
    ],
)
def test_vagrant_validate(project: Path, env: dict[str, str], machines: int) -> None:
    done = validate(project, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully." in done.stdout
    assert done.stdout.count("Ignoring provider config") == machines


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OVERLAYCTL_FAMILY": "suse"}, "OVERLAYCTL_FAMILY must be one of debian, rhel"),
        ({"OVERLAYCTL_PUBKEY": "/nonexistent.pub"}, "public key /nonexistent.pub not found"),
        ({"OVERLAYCTL_LIBVIRT_NETWORK": "nat"}, "OVERLAYCTL_LIBVIRT_NETWORK must be default or"),
        ({"OVERLAYCTL_LIBVIRT_TB_CACHE": "5"}, 'OVERLAYCTL_LIBVIRT_TB_CACHE="5" must be a whole'),
    ],
)
def test_vagrantfile_refuses_bad_settings(project: Path, env: dict[str, str], message: str) -> None:
    done = validate(project, **env)
    assert done.returncode != 0
    assert message in done.stderr
