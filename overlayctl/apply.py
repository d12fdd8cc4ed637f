"""Carry out one phase of a HostPlan on its host (the acting half of plan.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from overlayctl import agent_phase
from overlayctl.errors import OverlayctlError
from overlayctl.plan.changes import Action, HostPlan
from overlayctl.remote.ssh import Remote, RemoteCommandFailed

_APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]


@dataclass(frozen=True)
class ApplyContext:
    family: str  # debian | rhel
    bundle: agent_phase.AgentBundle | None = None  # the agent wheels for this host's Python
    docker_mode: str = "dropin"
    # Hosts whose docker restart waits for the caller (containers run there: restarted one host
    # at a time after the phase); None: restart at once.
    deferred: set[str] | None = None


def apply_phase(remote: Remote, plan: HostPlan, phase: str, ctx: ApplyContext) -> int:
    """Write the phase's files, then run its actions; returns how many changes were made.

    etcd's start/restart are not run here: the cluster is started as a whole (init.py). The
    docker phase ends by checking that docker0 holds the lease's .1, fixing it if not.
    """
    files, actions = plan.in_phase(phase)
    for change in files:
        want = change.desired
        remote.put_file(change.path, want.content, want.mode, f"{want.owner}:{want.owner}")
    done = len(files)
    host = remote.target.name
    for action in actions:
        if action.kind in ("start", "restart") and action.target == "etcd":
            continue
        if action.target == "docker" and action.kind == "restart" and _defer(remote, ctx):
            done += 1  # counted now, done by the caller
            continue
        _ACTIONS[action.kind](remote, action, ctx)
        done += 1
    if phase == "docker" and ctx.bundle is not None and host not in (ctx.deferred or ()):
        made = agent_phase.ensure_bip(remote, ctx.family, ctx.docker_mode,
                                      defer_if_busy=ctx.deferred is not None)  # fmt: skip
        if made is None and ctx.deferred is not None:  # busy: restarted by the caller
            ctx.deferred.add(host)
            made = 1
        done += made or 0
    return done


def _defer(remote: Remote, ctx: ApplyContext) -> bool:
    """Leave this host's docker restart to the caller when containers run on it."""
    if ctx.deferred is None or not agent_phase.docker_busy(remote):
        return False
    ctx.deferred.add(remote.target.name)
    return True


def _hostname(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    if remote.run(["hostnamectl", "set-hostname", action.target], check=False).code != 0:
        remote.run(["hostname", action.target])


def _sysctl(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    remote.run(["sysctl", "-w", action.target])


def _restart_network(remote: Remote, action: Action, ctx: ApplyContext) -> None:
    if ctx.family == "debian":
        remote.run(["sh", "-c", 'ifdown "$1"; ifup "$1"', "sh", action.target])
    else:
        remote.run(["nmcli", "connection", "reload"])
        remote.run(["nmcli", "device", "reapply", action.target])


def _install(remote: Remote, action: Action, ctx: ApplyContext) -> None:
    packages = action.target.split()
    if ctx.family == "debian":
        install = [*_APT, "install", "--no-install-recommends", *packages]
        try:
            remote.run(install, timeout=1200, waiting_for=f"apt-get to install {action.target}")
        except RemoteCommandFailed:
            # A fresh host often has no package lists yet: update once, then try again.
            remote.run([*_APT, "update"], timeout=600, waiting_for="apt-get update")
            remote.run(install, timeout=1200, waiting_for=f"apt-get to install {action.target}")
        return
    manager = "dnf" if remote.run(["sh", "-c", "command -v dnf"], check=False).code == 0 else "yum"
    try:
        remote.run([manager, "-y", "install", *packages], timeout=1200,
                   waiting_for=f"{manager} to install {action.target}")  # fmt: skip
    except RemoteCommandFailed as exc:
        hints = "".join(f"; {hint}" for name, hint in _RHEL_REPOS.items() if name in packages)
        raise OverlayctlError(f"{exc}{hints}") from None


# Where the RHEL-family packages that are not in BaseOS/AppStream come from (see README).
_RHEL_REPOS = {
    "etcd": "etcd comes from EPEL (Rocky/Alma: dnf install epel-release)",
    "docker-ce": "docker-ce comes from Docker's repository (dnf config-manager --add-repo "
    "https://download.docker.com/linux/centos/docker-ce.repo)",
}


def _firewalld_reload(remote: Remote, _action: Action, _ctx: ApplyContext) -> None:
    remote.run(["firewall-cmd", "--reload"], timeout=120, waiting_for="firewalld to reload")


def _add_service(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    """`add-service SERVICE zone=ZONE`: in the permanent config and at once in the runtime."""
    service, zone = action.target.split(" zone=")
    for scope in (["--permanent"], []):
        remote.run(["firewall-cmd", *scope, f"--zone={zone}", f"--add-service={service}"])


def _systemctl(*verb: str) -> Callable[[Remote, Action, ApplyContext], None]:
    def run(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
        target = [] if action.kind == "daemon-reload" else [action.target]
        remote.run(["systemctl", *verb, *target])

    return run


def _remove_device(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    """A previous backend's device (the agent removes it too when it starts; gone is fine)."""
    remote.run(["ip", "link", "delete", action.target], check=False)


def _remove_file(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    remote.run(["rm", "-f", action.target])


def _restore_file(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    """The original of a file overlayctl edited in place, from the backup its first edit made."""
    saved = remote.backup_root + action.target
    if remote.run(["test", "-f", saved], check=False).code != 0:
        raise OverlayctlError(
            f"{remote.target.name}: no backup of {action.target} in {remote.backup_root}; put "
            "docker's original unit back by hand (e.g. reinstall docker), then re-run"
        )
    remote.run(["cp", "-a", saved, action.target])


def _edit_execstart(remote: Remote, _action: Action, ctx: ApplyContext) -> None:
    agent_phase.edit_execstart(remote, ctx.family)


def _install_agent(remote: Remote, _action: Action, ctx: ApplyContext) -> None:
    if ctx.bundle is None:
        raise OverlayctlError(f"{remote.target.name}: no agent wheelhouse for this host")
    agent_phase.install_agent(remote, ctx.bundle)


def _start(remote: Remote, action: Action, _ctx: ApplyContext) -> None:
    if action.target == "overlay-agent":
        agent_phase.restart_agent(remote)
    else:
        remote.run(["systemctl", "restart", action.target], timeout=180,
                   waiting_for=f"{action.target} to restart")  # fmt: skip


_ACTIONS: dict[str, Callable[[Remote, Action, ApplyContext], None]] = {
    "hostname": _hostname,
    "sysctl": _sysctl,
    "restart-network": _restart_network,
    "install": _install,
    "reload": _firewalld_reload,
    "add-service": _add_service,
    "install-agent": _install_agent,
    "remove-device": _remove_device,
    "remove-file": _remove_file,
    "restore-file": _restore_file,
    "edit-execstart": _edit_execstart,
    "daemon-reload": _systemctl("daemon-reload"),
    "enable": _systemctl("enable"),
    "start": _start,
    "restart": _start,
}


def restart_unit(remote: Remote, unit: str, wait: bool) -> None:
    """(Re)start UNIT; without WAIT, return at once (etcd members must start together)."""
    argv = ["systemctl", "restart", unit] if wait else ["systemctl", "restart", "--no-block", unit]
    try:
        remote.run(argv, timeout=120, waiting_for=f"{unit} to start")
    except RemoteCommandFailed as exc:
        raise OverlayctlError(f"{remote.target.name}: starting {unit} failed: {exc}") from None
