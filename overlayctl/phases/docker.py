"""docker (node hosts): a drop-in makes dockerd read the agent's /run/flannel/docker and start
after the agent, so the bip follows the lease across reboots (`docker.mode: execstart`: the
seed's ExecStart edit in docker's own unit instead; switching leaves what a fresh init in the
new mode leaves). docker must run on the lease: docker0 holding the lease's .1 and dockerd with
every flag the agent wrote (it reads them only when it starts), else it restarts: at once where
no container runs, one host at a time where containers run, so two hosts' containers are never
down together.
"""

from __future__ import annotations

import re
import shlex
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host
from overlayctl.phases.base import HostPhase, OnHost, PlanInput, Probe, Restart, Rolling
from overlayctl.plan.changes import Action, service_actions
from overlayctl.plan.docker_takeover import flag_changes
from overlayctl.plan.facts import Facts, env_settings
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote, RemoteCommandFailed

STATE = HostScript("docker-state.sh")
OWN_BRIDGE = HostScript("docker-own-bridge.sh")


class Docker(HostPhase):
    name: ClassVar[str] = "docker"
    restart = Restart("docker", Rolling.WHERE_BUSY)
    probe_hosts: ClassVar[bool] = True

    def runs_on(self, host: Host) -> bool:
        return host.is_node

    def owns(self, path: str) -> bool:
        return path == hp.DOCKER_DROPIN

    def actions(self, inp: PlanInput) -> list[Action]:
        if not inp.host.is_node or inp.agent_digest is None:
            return []
        switch = self._mode_actions(inp.docker_mode, inp.facts)
        unit_changed = hp.DOCKER_DROPIN in inp.changed or bool(switch)
        return switch + service_actions(
            self.name, "docker", inp.facts, reload=unit_changed, restart=unit_changed,
            fresh="docker" in inp.installing,
        )  # fmt: skip

    def _mode_actions(self, mode: str, facts: Facts) -> list[Action]:
        """What makes docker's units match MODE, whatever the other mode left: execstart edits
        docker's own unit and must not keep our drop-in (its ExecStart would win); dropin puts
        the vendor unit back from the backup made by the edit."""
        if mode == "execstart":
            actions = []
            if facts.docker_dropin:
                actions.append(Action(self.name, "remove-file", hp.DOCKER_DROPIN))
            if not facts.docker_unit_edited:
                actions.append(Action(self.name, "edit-execstart", facts.docker_unit or "docker"))
            return actions
        if facts.docker_unit_edited:
            return [Action(self.name, "restore-file", facts.docker_unit)]
        return []

    def probe(self, on: OnHost) -> Probe:
        """One round trip: docker's state and the lease; a restart is due when the plan says so
        or docker does not run on the lease with the agent's flags. Only then, whether
        containers run (a second look)."""
        if on.target.bundle is None:
            return Probe(restart=False)
        state = on.remote.script(STATE, hp.DOCKER_OPTS_ENV, hp.SUBNET_ENV).stdout
        lease = _value(state, "lease")
        if not lease:
            raise OverlayctlError(f"{on.target.name}: {hp.SUBNET_ENV} has no FLANNEL_SUBNET")
        planned = on.target.plan.wants("docker", "start", "restart")
        restart = planned or not docker_runs_on(state, lease)
        busy = restart and self.running(on.target) and containers_run(on.remote)
        return Probe(restart=restart, busy=busy, lease=lease)

    def act(self, on: OnHost, action: Action) -> None:
        remote = on.remote
        if action.kind == "remove-file":
            remote.run(["rm", "-f", action.target])
        elif action.kind == "restore-file":
            restore_original(remote, action.target)
        elif action.kind == "edit-execstart":
            edit_execstart(remote, on.family)
        else:
            super().act(on, action)

    def finish(self, on: OnHost) -> int:
        """execstart: the flags in docker's unit follow the agent's (a new MTU, ip-masq)."""
        if on.target.bundle is None or on.inv.cluster.docker_mode != "execstart":
            return 0
        return edit_execstart(on.remote, on.family)

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        """Restart docker, then check that docker0 holds the lease's .1."""
        remote = on.remote
        # One round trip. docker.service allows 3 starts a minute; day-2 changes that follow
        # each other (backend, then docker.mode) hit that limit and systemd refuses the restart.
        # Each restart here is one overlayctl asked for on purpose: the counter starts again.
        restart = ["systemctl", "restart", "docker"]
        _reset, restarted, out = remote.batch([
            (["sh", "-c", "systemctl reset-failed docker.service docker.socket; true"],
             "systemctl reset-failed docker.service docker.socket"),
            (restart, shlex.join(restart)),
            (["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
             "ip -4 -o addr show dev docker0"),
        ], timeout=180, waiting_for="docker to restart", stop_at_failure=True)  # fmt: skip
        if restarted.code != 0:
            raise RemoteCommandFailed(remote.target.name, shlex.join(restart), restarted.code,
                                      restarted.stderr)  # fmt: skip
        have = match.group(1) if (match := re.search(r"inet (\S+)", out.stdout)) else None
        if have != probe.lease:
            raise OverlayctlError(
                f"{remote.target.name}: docker0 has {have or 'no address'}, the lease is "
                f"{probe.lease}"
            )


def _value(state: str, key: str) -> str:
    return next((v for k, _, v in (ln.partition("=") for ln in state.splitlines()) if k == key), "")


def docker_runs_on(state: str, lease: str) -> bool:
    """Pure: docker0 holds the lease's .1 and dockerd runs with the values of every flag the
    agent wrote (--bip, --ip-masq, --mtu), from docker-state.sh's output. docker reads them only
    when it starts, so a new MTU (a backend change) needs a restart although docker0 kept its
    address. Values, not spellings: a hand-built host's `--mtu 1472` is the agent's
    `--mtu=1472`, and adopt must not restart docker (and stop containers) for that."""
    values: dict[str, list[str]] = {}
    for line in state.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    running = values.get("arg", [])
    want = " ".join(values.get("want", [])).split()
    return values.get("docker0") == [lease] and bool(running) and not flag_changes(running, want)


def containers_run(remote: Remote) -> bool:
    """Restarting docker here stops containers (its restart then waits for a turn alone)."""
    out = remote.run(["docker", "ps", "-q"], check=False, timeout=60)
    return out.code == 0 and bool(out.stdout.strip())


def read_env(remote: Remote, path: str) -> dict[str, str]:
    return env_settings((remote.read_files([path])[path].content or b"").decode())


def edit_execstart(remote: Remote, family: str) -> int:
    """The seed's section 5.7: dockerd's ExecStart in docker's own unit gets the flags."""
    opts = read_env(remote, hp.DOCKER_OPTS_ENV)
    flags = [
        opts[k] for k in ("DOCKER_OPT_BIP", "DOCKER_OPT_IPMASQ", "DOCKER_OPT_MTU") if opts.get(k)
    ]
    unit_path = remote.run(["systemctl", "show", "-p", "FragmentPath", "--value", "docker"])
    path = unit_path.stdout.strip()
    current = remote.read_files([path])[path]
    if current.content is None:
        raise OverlayctlError(f"{remote.target.name}: docker's unit {path} not found")
    exec_start = shlex.join([hp.DOCKERD[family], "-H", "fd://",
                             "--containerd=/run/containerd/containerd.sock", *flags])  # fmt: skip
    lines = current.content.decode().splitlines(keepends=True)
    new = [f"ExecStart={exec_start}\n" if ln.startswith("ExecStart=/") else ln for ln in lines]
    if new == lines:
        return 0
    remote.put_file(path, "".join(new).encode(), current.mode or 0o644, "root:root")
    remote.run(["systemctl", "daemon-reload"])
    return 1


def restore_original(remote: Remote, path: str) -> None:
    """The original of a file overlayctl edited in place, from the backup its first edit made."""
    saved = remote.backup_root + path
    if remote.run(["test", "-f", saved], check=False).code != 0:
        raise OverlayctlError(
            f"{remote.target.name}: no backup of {path} in {remote.backup_root}; put "
            "docker's original unit back by hand (e.g. reinstall docker), then re-run"
        )
    remote.run(["cp", "-a", saved, path])


def own_bridge(remote: Remote) -> bool:
    """reset: docker back on its own bridge (when it runs); whether it was restarted. docker
    keeps an existing docker0's address: the bridge goes, so that it makes its own again."""
    if remote.run(["systemctl", "is-active", "docker"], check=False).code != 0:
        return False
    remote.script(OWN_BRIDGE, check=False, timeout=300,
                  waiting_for="docker to restart on its own bridge")  # fmt: skip
    return True
