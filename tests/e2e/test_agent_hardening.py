"""Issue #17 items 4 and 5 on full lab hosts: the agent's sandboxed unit keeps every backend
working (vxlan, host-gw, udp with Batching) at a `systemd-analyze security` exposure of 6.0 or
lower, and a wheel in the cache that does not match overlayctl's lock stops `init` before any
host is changed.

One 2-host lab for the whole module (each boot costs about a minute of CPU): the refused init
runs first, on the untouched hosts, then one init per backend.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from overlayctl.lab import labs, state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from overlayctl.wheelhouse import deps_dir
from tests.e2e.conftest import make_lab
from tests.labtools import cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
HOSTS = ("node1", "node2")
IMAGE = ("--image", BUSYBOX_IMAGE_TAG, "--import-from", BUSYBOX_IMAGE)
# What a host's state is, for "nothing changed": every file under the folders init writes, and
# the state of the units it manages.
SNAPSHOT = (
    "find /etc /opt /var/lib/etcd -xdev -type f 2>/dev/null | sort | xargs -r sha256sum; "
    "systemctl show -p ActiveState -p UnitFileState etcd docker overlay-agent"
)
EXPOSURE = re.compile(r"Overall exposure level for overlay-agent\.service: (\d+\.\d+)")
# name -> (inventory changes, what node1's route to node2's subnet goes through). host-gw last:
# its routes through eth0 are the only ones no device takes away with it.
BACKENDS = {
    "vxlan": ({"backend": "vxlan"}, "dev flannel.1"),
    "udp-batching": ({"backend": "udp", "backend_options": {"batching": True}}, "dev flannel0"),
    "host-gw": ({"backend": "host-gw"}, "via {node2} dev eth0"),
}


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[state.LabState, Path]]:
    lab, inventory, _ = make_lab(2, "vxlan", prefix="hd")
    try:
        yield lab, inventory
    finally:
        labs.down(lab.name, progress=lambda _m: None)


def snapshot(lab: state.LabState) -> dict[str, str]:
    return {host: on(lab, host, SNAPSHOT).stdout for host in HOSTS}


def test_a_tampered_wheel_stops_init_before_any_host_changes(lab, tmp_path, monkeypatch) -> None:
    lab, inventory = lab
    cache = tmp_path / "cache"
    folder = cache / deps_dir("3.11", "x86_64").name
    shutil.copytree(deps_dir("3.11", "x86_64"), folder)
    (tampered,) = folder.glob("grpcio-*.whl")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(cache))
    before = snapshot(lab)

    refused = cli(lab, "init", "-i", str(inventory))

    assert refused.returncode == 3, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("overlayctl: error:")]
    assert len(errors) == 1 and tampered.name in errors[0], refused.stderr
    assert "does not match its sha256" in errors[0] and "Traceback" not in refused.stderr
    assert snapshot(lab) == before
    assert not (lab.dir / "overlayctl-state").exists() or not any(
        (lab.dir / "overlayctl-state").rglob("*.key")
    ), "the PKI was made before the wheels were checked"


def inventory_for(inventory: Path, name: str) -> Path:
    doc = yaml.safe_load(inventory.read_text())
    doc["cluster"].update(BACKENDS[name][0])
    path = inventory.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def subnet_of(lab: state.LabState, host: str) -> str:
    env = on(lab, host, "cat /run/flannel/subnet.env").stdout
    (gateway,) = re.findall(r"^FLANNEL_SUBNET=(\S+)$", env, re.M)
    address, length = gateway.split("/")
    return f"{address.rsplit('.', 1)[0]}.0/{length}"


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_works_in_the_sandboxed_unit(lab, name: str) -> None:
    lab, base = lab
    inventory = inventory_for(base, name)
    done = cli(lab, "init", "-i", str(inventory), "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(cli(lab, "status", "-i", str(inventory), "-o", "json").stdout)
    assert status["ok"], status["errors"]  # every agent ready, its lease of this backend

    # The kernel's choice for node2's containers (udp routes the whole network to flannel0).
    gateway = subnet_of(lab, "node2").replace(".0/", ".1/").split("/")[0]
    route = on(lab, "node1", f"ip route get {gateway}").stdout
    assert BACKENDS[name][1].format(node2=lab.host("node2").address) in route, route
    if name == "vxlan":
        fdb = on(lab, "node1", "bridge fdb show dev flannel.1").stdout
        assert f"dst {lab.host('node2').address}" in fdb, fdb
    rules = on(lab, "node1", "iptables -S FLANNEL-FWD").stdout
    assert "-A FLANNEL-FWD" in rules, rules
    report = json.loads(cli(lab, "verify", "-i", str(inventory), "-o", "json", *IMAGE).stdout)
    assert report["ok"] and report["pairs"], report["errors"]

    for host in HOSTS:
        shown = on(lab, host, "systemd-analyze security overlay-agent.service").stdout
        (exposure,) = EXPOSURE.findall(shown)
        assert float(exposure) <= 6.0, shown
        # The sandbox is in force, not only written: the agent holds exactly its two capabilities.
        caps = on(lab, host, "grep CapEff /proc/$(systemctl show -p MainPID --value "
                             "overlay-agent)/status").stdout.split()  # fmt: skip
        assert caps[-1] == f"{(1 << 12) | (1 << 13):016x}", caps  # CAP_NET_ADMIN, CAP_NET_RAW
        # The default (http) transport: no gRPC stack on the host.
        grpc = on(lab, host, "ls /opt/overlay-agent/wheelhouse").stdout
        assert "grpcio" not in grpc and "overlay_agent" in grpc, grpc
    print(f"{name}: exposure {exposure}")  # shown with -s
