"""packages: what the roles need, installed with apt-get or dnf/yum, only what is missing.
overlayctl adds no repositories: on RHEL, etcd comes from EPEL and docker-ce from Docker's
(README "RHEL family"), and a failed install says so.
"""

from __future__ import annotations

from typing import ClassVar

from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host
from overlayctl.phases.base import HostPhase, OnHost, PlanInput
from overlayctl.plan.changes import Action
from overlayctl.plan.facts import Facts
from overlayctl.remote.ssh import Remote, RemoteCommandFailed

PACKAGES = {
    # family -> role ("all", "etcd", "node") -> packages
    "debian": {
        "all": ("iptables", "iproute2", "etcd-client", "iputils-ping"),
        "etcd": ("etcd-server",),
        "node": ("python3", "python3-venv", "docker.io"),
    },
    # etcd: EPEL (RHEL 9 has none); docker-ce: Docker's repository (the seed's dockerd). Plain
    # "docker" would be podman-docker on EL9. overlayctl adds no repositories (see README).
    "rhel": {
        "all": ("iptables", "iproute", "iputils"),
        "etcd": ("etcd",),
        "node": ("python3", "docker-ce"),
    },
}
# Where the RHEL-family packages that are not in BaseOS/AppStream come from (see README).
_RHEL_REPOS = {
    "etcd": "etcd comes from EPEL (Rocky/Alma: dnf install epel-release)",
    "docker-ce": "docker-ce comes from Docker's repository (dnf config-manager --add-repo "
    "https://download.docker.com/linux/centos/docker-ce.repo)",
}
_APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]


def wanted_packages(host: Host, family: str) -> list[str]:
    roles = PACKAGES[family]
    return [
        *roles["all"],
        *(roles["etcd"] if host.is_etcd else ()),
        *(roles["node"] if host.is_node else ()),
    ]


def both_families(host: Host) -> list[str]:
    """The package names to look up before the OS family is known (facts.sh checks both)."""
    return sorted({*wanted_packages(host, "debian"), *wanted_packages(host, "rhel")})


def missing_packages(host: Host, family: str, facts: Facts) -> list[str]:
    return [p for p in wanted_packages(host, family) if p not in facts.packages]


class Packages(HostPhase):
    name: ClassVar[str] = "packages"

    def actions(self, inp: PlanInput) -> list[Action]:
        return [Action(self.name, "install", inp.installing)] if inp.installing else []

    def act(self, on: OnHost, action: Action) -> None:
        if action.kind != "install":
            super().act(on, action)
        elif on.family == "debian":
            _apt_install(on.remote, action.target)
        else:
            _dnf_install(on.remote, action.target)


def _apt_install(remote: Remote, packages: str) -> None:
    install = [*_APT, "install", "--no-install-recommends", *packages.split()]
    try:
        remote.run(install, timeout=1200, waiting_for=f"apt-get to install {packages}")
    except RemoteCommandFailed:
        # A fresh host often has no package lists yet: update once, then try again.
        remote.run([*_APT, "update"], timeout=600, waiting_for="apt-get update")
        remote.run(install, timeout=1200, waiting_for=f"apt-get to install {packages}")


def _dnf_install(remote: Remote, packages: str) -> None:
    manager = "dnf" if remote.run(["sh", "-c", "command -v dnf"], check=False).code == 0 else "yum"
    try:
        remote.run([manager, "-y", "install", *packages.split()], timeout=1200,
                   waiting_for=f"{manager} to install {packages}")  # fmt: skip
    except RemoteCommandFailed as exc:
        names = packages.split()
        hints = "".join(f"; {hint}" for name, hint in _RHEL_REPOS.items() if name in names)
        raise OverlayctlError(f"{exc}{hints}") from None
