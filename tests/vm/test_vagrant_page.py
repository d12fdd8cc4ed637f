"""The `vm` tier: the README's "Real VMs (Vagrant)" page on 3 real VMs (tests/vm/vagrant_page.py,
the same entry point .github/workflows/vagrant.yml runs), with the installed overlayctl.

Real VMs each have their own kernel, module loading, reboot and network bring-up, which the
systemd-nspawn lab hosts share with this machine; the checks below prove that is what ran (the
guests' kernel is not this machine's, systemd-detect-virt says qemu) and that the run left
nothing behind. The budget of the issue (#19), 12 minutes and 5 GiB on this 2-core machine, is
printed beside what the run took (a time is no test verdict).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import installed

pytestmark = [pytest.mark.lab, pytest.mark.vm]
ROOT = Path(__file__).resolve().parents[2]
BUDGET_SECONDS = 12 * 60
BUDGET_MIB = 5 * 1024
STEPS = (
    "box add", "vagrant up (3 VMs)", "guest kernels", "inventory from-vagrant", "init",
    "init again (0 changes)", "verify", "status", "vagrant reload node2", "status after reload",
    "verify after reload", "reset --yes", "vagrant destroy -f",
)  # fmt: skip


def links() -> set[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()}


def test_the_readme_vagrant_page_on_three_real_vms(
    tmp_path: Path, installed_overlayctl: installed.Installed
) -> None:
    before = links()
    summary_path = tmp_path / "summary.json"
    argv = [sys.executable, "-m", "tests.vm.vagrant_page", "--summary", str(summary_path),
            "--overlayctl", str(installed_overlayctl.overlayctl)]  # fmt: skip
    # The page bounds every step and its own total; this only catches a hung cleanup. Its log
    # is printed: `make test` shows it (-rP), failed or not.
    done = subprocess.run(argv, cwd=ROOT, env=installed.clean_env(), timeout=3 * BUDGET_SECONDS,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)  # fmt: skip
    print(done.stdout)
    summary = json.loads(summary_path.read_text())
    assert done.returncode == 0 and summary["ok"], summary.get("error") or summary

    assert list(summary["steps"]) == list(STEPS)
    guests = summary["guests"]
    assert sorted(guests) == ["node1", "node2", "node3"]
    for name, guest in guests.items():
        assert guest["virt"] == "qemu", (name, guest)
        assert guest["kernel"] and guest["kernel"] != os.uname().release, (name, guest)

    # Nothing left: no process in the namespace, no namespace, no run folder, no new link here.
    assert summary["leftover_pids"] == []
    assert not Path("/run/netns", summary["name"]).exists()
    assert not Path("/var/tmp/overlayctl-vm", summary["name"]).exists()
    assert not {n for n in links() - before if n.startswith(("virbr", "vnet", "tap"))}

    # The budget (12 min, 5 GiB) is reported beside the figures, not asserted: speed
    # goals live in benchmarks (README, "What ran here" has the measured steps).
    took, peak = summary["total_seconds"], max(summary["peak_rss_mib"],
                                               summary["box"]["peak_rss_mib"])  # fmt: skip
    print(f"vm tier: {took} s (budget {BUDGET_SECONDS} s), peak {peak} MiB (budget {BUDGET_MIB}"
          f" MiB), box {summary['box']['state']}: {summary['steps']}")  # fmt: skip
