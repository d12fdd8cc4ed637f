"""Carry out one phase of a HostPlan on its host (the acting half of plan.py)."""

from __future__ import annotations

from collections.abc import Callable

from overlayctl.errors import OverlayctlError
from overlayctl.plan import Action, HostPlan
from overlayctl.remote.ssh import Remote, RemoteCommandFailed

_APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]


def apply_phase(remote: Remote, plan: HostPlan, phase: str, family: str) -> int:
    """Write the phase's files, then run its actions; returns how many changes were made.

    etcd's start/restart are not run here: the cluster is started as a whole (see etcd_phase).
    """
    files, actions = plan.in_phase(phase)
    for change in files:
        want = change.desired
        remote.put_file(change.path, want.content, want.mode, f"{want.owner}:{want.owner}")
    done = len(files)
    for action in actions:
        if action.kind in ("start", "restart"):
            continue
        _ACTIONS[action.kind](remote, action, family)
        done += 1
    return done


def _hostname(remote: Remote, action: Action, _family: str) -> None:
    if remote.run(["hostnamectl", "set-hostname", action.target], check=False).code != 0:
        remote.run(["hostname", action.target])


def _sysctl(remote: Remote, action: Action, _family: str) -> None:
    remote.run(["sysctl", "-w", action.target])


def _restart_network(remote: Remote, action: Action, family: str) -> None:
    if family == "debian":
        remote.run(["sh", "-c", 'ifdown "$1"; ifup "$1"', "sh", action.target])
    else:
        remote.run(["nmcli", "connection", "reload"])
        remote.run(["nmcli", "device", "reapply", action.target])


def _install(remote: Remote, action: Action, family: str) -> None:
    packages = action.target.split()
    if family == "debian":
        install = [*_APT, "install", "--no-install-recommends", *packages]
        try:
            remote.run(install, timeout=1200)
        except RemoteCommandFailed:
            # A fresh host often has no package lists yet: update once, then try again.
            remote.run([*_APT, "update"], timeout=600)
            remote.run(install, timeout=1200)
        return
    manager = "dnf" if remote.run(["sh", "-c", "command -v dnf"], check=False).code == 0 else "yum"
    remote.run([manager, "-y", "install", *packages], timeout=1200)


def _systemctl(*verb: str) -> Callable[[Remote, Action, str], None]:
    def run(remote: Remote, action: Action, _family: str) -> None:
        target = [] if action.kind == "daemon-reload" else [action.target]
        remote.run(["systemctl", *verb, *target])

    return run


_ACTIONS: dict[str, Callable[[Remote, Action, str], None]] = {
    "hostname": _hostname,
    "sysctl": _sysctl,
    "restart-network": _restart_network,
    "install": _install,
    "daemon-reload": _systemctl("daemon-reload"),
    "enable": _systemctl("enable"),
}


def restart_unit(remote: Remote, unit: str, wait: bool) -> None:
    """(Re)start UNIT; without WAIT, return at once (etcd members must start together)."""
    argv = ["systemctl", "restart", unit] if wait else ["systemctl", "restart", "--no-block", unit]
    try:
        remote.run(argv, timeout=120)
    except RemoteCommandFailed as exc:
        raise OverlayctlError(f"{remote.target.name}: starting {unit} failed: {exc}") from None
