"""README promise of `cluster.docker.mode: execstart` (issue #14), on a lab of its own: the
seed's literal edit of dockerd's ExecStart in docker's vendor unit (no drop-in), the original
kept under /var/lib/overlayctl/backup/, a no-change re-run, and `reset` putting the vendor unit
back byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.promises import IMAGE, inventory, leases, ok, own_lab, run, sh
from tests.labtools import cli

pytestmark = [pytest.mark.lab, pytest.mark.full]
THREE = ["node1", "node2", "node3"]
UNIT = "/lib/systemd/system/docker.service"
BACKUP = f"/var/lib/overlayctl/backup{UNIT}"
DROPIN = "/etc/systemd/system/docker.service.d/overlayctl.conf"


@pytest.fixture(scope="module")
def execstart() -> Iterator[tuple]:
    """The lab, its inventory, and each host's vendor unit (base64) as it was before init."""
    with own_lab(3, "px") as lab:
        vendor = {h: sh(lab, h, f"base64 -w0 {UNIT}") for h in THREE}
        assert len(set(vendor.values())) == 1 and "ExecStart=/usr/sbin/dockerd -H fd:// " in (
            sh(lab, "node1", f"cat {UNIT}"))  # fmt: skip
        three = inventory(lab, "three", THREE, docker={"mode": "execstart"})
        ok(cli(lab, "init", "-i", str(three)))
        yield lab, three, vendor


def test_execstart_end_to_end(execstart) -> None:
    lab, three, vendor = execstart
    result, report = run(lab, "verify", "-i", str(three), *IMAGE)
    assert result.returncode == 0 and report["ok"] is True, report
    assert len(report["pairs"]) == 9 and all(p["ok"] and p["mtu_ok"] for p in report["pairs"])
    subnet = leases(run(lab, "status", "-i", str(three))[1])
    for host in THREE:
        bip = subnet[host].replace(".0/", ".1/")
        unit = sh(lab, host, "systemctl cat docker")
        assert unit.startswith(f"# {UNIT}\n"), unit  # the vendor unit itself, no drop-in
        exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
        assert exec_start == [
            "ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock "
            f"--bip={bip} --ip-masq=true --mtu=1450"
        ], unit
        assert sh(lab, host, f"test ! -e {DROPIN} && echo none") == "none\n"
        assert sh(lab, host, f"base64 -w0 {BACKUP}") == vendor[host]  # the original, kept
        assert sh(lab, host, "ip -4 -o addr show docker0").split()[3] == bip
    again, rerun = run(lab, "init", "-i", str(three))
    assert again.returncode == 0 and rerun["changes"] == 0, again.stdout + again.stderr


def test_reset_puts_the_vendor_unit_back_byte_for_byte(execstart) -> None:
    lab, three, vendor = execstart
    result, doc = run(lab, "reset", "-i", str(three), "--yes")
    assert result.returncode == 0 and doc["ok"] is True, result.stdout + result.stderr
    for host in THREE:
        assert sh(lab, host, f"base64 -w0 {UNIT}") == vendor[host]
        assert sh(lab, host, "test ! -e /var/lib/overlayctl/backup && echo gone") == "gone\n"
        unit = sh(lab, host, "systemctl cat docker; systemctl is-active docker")
        assert "--bip" not in unit and unit.endswith("\nactive\n"), unit
