"""Undoing overlayctl's firewalld configuration (init writes it: render.py, plan.py, apply.py).

A zone that names a service whose definition is gone makes firewalld refuse that zone at the next
reload, so the services are taken out of every zone before their files are removed; then
firewalld is reloaded so its runtime forgets the overlay's zone too.
"""

from __future__ import annotations

from overlayctl import paths as hp
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

RESET = HostScript("firewalld-reset.sh")


def reset(remote: Remote) -> None:
    """Take overlayctl's services out of every zone, remove its firewalld files, reload."""
    remote.script(RESET, hp.FIREWALLD_DIR, check=False, timeout=120)
