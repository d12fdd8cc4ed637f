"""Every file a host should have: the rendered ones and, with TLS, its certificates."""

from __future__ import annotations

from overlayctl import paths as hp
from overlayctl.inventory.model import Host, Inventory
from overlayctl.pki import Pki
from overlayctl.plan.changes import DesiredFile
from overlayctl.plan.render import render_host


def desired_files(
    inv: Inventory, host: Host, pki: Pki | None, joining_with: tuple[Host, ...] | None = None
) -> dict[str, DesiredFile]:
    """Every file HOST should have: the rendered ones and, with TLS, its certificates."""
    rendered = render_host(inv, host, joining_with=joining_with)
    files = {p: DesiredFile(f.content, f.mode, f.owner) for p, f in rendered.items()}
    if pki is not None:
        content = pki.host_files(host.name if host.is_etcd else None)
        for spec in hp.PKI_FILES:
            if spec.path in content:
                files[spec.path] = DesiredFile(content[spec.path], spec.mode, spec.owner)
    return files
