"""The vxlan device's MAC is set by the agent at creation, so systemd-udevd keeps it.

Found on real VMs (tests/vm): Debian 12's 99-default.link says MACAddressPolicy=persistent,
and udevd replaces a MAC the kernel picked at random (addr_assign_type 1) just after the agent
had published it as VtepMAC; every peer then sent frames to a MAC the device no longer had.
A MAC given at creation is marked as set (addr_assign_type 3), which udevd leaves alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[3]
CREATE = """
from agent.backends.vxlan import random_mac
from agent.net.netlink import Netlink
mac = random_mac()
nl = Netlink()
nl.create_link("flannel.1", "vxlan", vxlan_id=1, vxlan_port=8472, vxlan_learning=0, address=mac)
with open("/sys/class/net/flannel.1/addr_assign_type") as f:
    kind = f.read().strip()
print(mac, nl.link("flannel.1")["mac"], kind)
"""


def test_a_new_vxlan_device_has_the_agent_s_mac_marked_as_set() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    script = f"mount -t sysfs sysfs /sys && exec {sys.executable} -c '{CREATE}'"
    done = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wanted, got, assign_type = done.stdout.split()
    assert got == wanted and assign_type == "3"  # NET_ADDR_SET: udevd's policy skips it
    first = int(wanted.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
