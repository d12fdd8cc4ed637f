"""The facts phase: what each host is like, gathered in one round trip."""

from __future__ import annotations

from overlayctl import paths as hostpaths
from overlayctl.errors import OverlayctlError
from overlayctl.plan.facts import Facts, parse_facts
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

FACTS = HostScript("facts.sh")


def gather(remote: Remote, packages: list[str]) -> Facts:
    facts = parse_facts(
        remote.script(FACTS, hostpaths.AGENT_DIGEST, hostpaths.DOCKER_DROPIN, *packages).stdout
    )
    name = remote.target.name
    if facts.os_family is None:
        raise OverlayctlError(f"{name}: unsupported OS {facts.os_id!r} (Debian or RHEL family)")
    if not facts.systemd:
        raise OverlayctlError(f"{name}: systemd is not running; overlayctl manages systemd hosts")
    if not facts.pkg_manager:
        raise OverlayctlError(f"{name}: no apt-get, dnf or yum found")
    return facts
