"""A backend takes over the host's overlay: devices of another backend or VNI go (issue #16:
vxlan -> host-gw left flannel.1 and its routes behind)."""

from __future__ import annotations

import pytest

from agent.backends import foreign_devices, is_overlay_device
from agent.subnet.config import parse_config

LINKS = ["lo", "eth0", "docker0", "flannel.1", "flannel.2", "flannel0", "flannel.x", "veth1"]


@pytest.mark.parametrize(
    ("backend", "gone"),
    [
        ('{"Type": "vxlan"}', ["flannel.2", "flannel0"]),
        ('{"Type": "vxlan", "VNI": 2}', ["flannel.1", "flannel0"]),
        ('{"Type": "host-gw"}', ["flannel.1", "flannel.2", "flannel0"]),
        ('{"Type": "udp"}', ["flannel.1", "flannel.2"]),
    ],
)
def test_only_other_backends_devices_go(backend: str, gone: list[str]) -> None:
    config = parse_config(f'{{"Network": "172.21.0.0/16", "Backend": {backend}}}')
    assert foreign_devices(config, LINKS) == gone


def test_only_flannels_device_names_count() -> None:
    assert [n for n in LINKS if is_overlay_device(n)] == ["flannel.1", "flannel.2", "flannel0"]
