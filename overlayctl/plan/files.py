"""Every file a host should have: the rendered ones and, with TLS, its certificates; and every
path it may need, read with its facts before its OS family is known."""

from __future__ import annotations

import dataclasses

from overlayctl import paths as hp
from overlayctl.inventory.model import OS_FAMILIES, Host, Inventory
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
        content = pki.host_files(host.name, member=host.is_etcd)
        for spec in hp.PKI_FILES:
            if spec.path in content:
                files[spec.path] = DesiredFile(content[spec.path], spec.mode, spec.owner)
    return files


def candidate_paths(inv: Inventory, host: Host) -> list[str]:
    """Every path HOST may be given, whichever OS family it turns out to run: read in the same
    round trip as its facts (an absent file costs nothing), so planning needs no second one."""
    paths = {hp.CA_CERT}  # the CA the host trusts, checked against this state folder's
    for family in OS_FAMILIES:
        paths.update(render_host(inv, dataclasses.replace(host, os=family)))
    if inv.cluster.tls:
        paths.update(f.path for f in hp.PKI_FILES)
    return sorted(paths)
