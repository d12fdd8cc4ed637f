"""Which data plane the agents run: etcd's network config (what the agents read), else the
inventory's. Pure, so the checks' expectations are tested without hosts."""

from __future__ import annotations

from typing import Any

from overlayctl.doctor.context import DataPlane
from overlayctl.inventory.model import BACKEND_OPTIONS, Inventory


def data_plane(config: dict[str, Any] | None, inv: Inventory) -> DataPlane:
    """CONFIG: the network config as read from etcd (None: unread). A field it lacks or holds
    with the wrong type falls back to the inventory's value, then to flannel's default."""
    config = config if isinstance(config, dict) else {}
    backend = config.get("Backend") if isinstance(config.get("Backend"), dict) else {}
    kind = backend.get("Type")
    if kind not in BACKEND_OPTIONS:
        kind = inv.cluster.backend
    options = {BACKEND_OPTIONS[kind][k].json_key: v for k, v in inv.cluster.backend_options
               if k in BACKEND_OPTIONS[kind]}  # fmt: skip

    def option(key: str) -> Any:
        spec = next((o for o in BACKEND_OPTIONS[kind].values() if o.json_key == key), None)
        if spec is None:
            return None
        for value in (backend.get(key), options.get(key)):
            if isinstance(value, spec.kind):
                return value
        return spec.default

    network = config.get("Network")
    subnet_len = config.get("SubnetLen")
    return DataPlane(
        backend=kind,
        network=network if isinstance(network, str) else str(inv.cluster.network),
        subnet_len=subnet_len if isinstance(subnet_len, int) else inv.cluster.subnet_len,
        port=option("Port"),
        vni=option("VNI"),
        directrouting=bool(option("DirectRouting")),
    )
