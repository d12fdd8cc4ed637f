"""agent (node hosts): overlay-agent installed offline from the wheelhouse for the host's Python
(every wheel's sha256 checked as root, unpacked into a fresh venv that replaces the old one), its
unit (Type=notify: a restart returns once subnet.env is written) and env file; then /readyz
must answer. A running agent restarts one host at a time (its data plane is in use), and only
where its files, certificates or wheels changed, or the network config did (agents read it only
when they start, as flanneld does; the old backend's device goes first).
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from concurrent.futures import Future
from typing import ClassVar

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host
from overlayctl.phases.base import HostPhase, OnHost, PlanInput, Probe, Restart, Rolling
from overlayctl.plan.changes import Action, service_actions
from overlayctl.plan.facts import Facts
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote, RemoteCommandFailed, command_of
from overlayctl.wheelhouse import AgentBundle

INSTALL = HostScript("install-agent.sh")
UNPACK_WHEELS = HostScript("unpack_wheels.py")
READY = HostScript("agent_ready.py")
DATAPLANE = HostScript("reset_dataplane.py")
_PATHS = {hp.AGENT_UNIT, *hp.AGENT_ENV.values()}
# What the agent dials with: CA, its certificate, its etcd password.
_CLIENT_PKI = {hp.CA_CERT, hp.ETCD_CLIENT_CERT, hp.ETCD_CLIENT_KEY, hp.ETCD_AGENT_PASSWORD}


class Agent(HostPhase):
    name: ClassVar[str] = "agent"
    restart = Restart("overlay-agent", Rolling.ONE_BY_ONE)

    def runs_on(self, host: Host) -> bool:
        return host.is_node

    unit_file_only: ClassVar[bool] = True

    def __init__(self) -> None:
        # host -> its install started early by PrefetchAgents (agent_prefetch.py)
        self.prefetched: dict[str, Future[None]] = {}

    def owns(self, path: str) -> bool:
        return path in _PATHS

    def actions(self, inp: PlanInput) -> list[Action]:
        if not inp.host.is_node or inp.agent_digest is None:
            return []
        install = inp.facts.agent_digest != inp.agent_digest
        actions = [Action(self.name, "install-agent", inp.agent_digest[:12])] if install else []
        restart = install or bool(inp.changed & (_PATHS | _CLIENT_PKI)) or restart_owed(inp.facts)
        return actions + service_actions(
            self.name, "overlay-agent", inp.facts, reload=hp.AGENT_UNIT in inp.changed,
            restart=restart,
            fresh=not inp.facts.agent_digest,
        )  # fmt: skip

    def act(self, on: OnHost, action: Action) -> None:
        if action.kind == "install-agent":
            if on.target.bundle is None:
                raise OverlayctlError(f"{on.target.name}: no agent wheelhouse for this host")
            prefetched = self.prefetched.pop(on.target.name, None)
            if prefetched is not None:
                prefetched.result()  # its failure is this host's, here
            else:
                install_agent(on.remote, on.target.bundle)
        elif action.kind == "remove-device":
            # A previous backend's device (the agent removes it too when it starts; gone is fine).
            on.remote.run(["ip", "link", "delete", action.target], check=False)
        else:
            super().act(on, action)

    def restart_unit(self, on: OnHost, probe: Probe, together: bool) -> None:
        restart_agent(on.remote)


def restart_owed(facts: Facts) -> bool:
    """The running agent started before the install now in place: an earlier run was cut
    between the two (its files all in place, so nothing else would restart it). An agent that
    says nothing (a unit from before this check) is not judged."""
    started = facts.agent_started_digest
    return bool(started) and bool(facts.agent_digest) and started != facts.agent_digest


def install_agent(remote: Remote, bundle: AgentBundle) -> None:
    """Upload the wheels and the program that unpacks them into a fresh private folder, check
    every file's hash as root (the wheels': from the lock, never from the files sent), then
    install."""
    upload = f"/tmp/overlayctl-agent-{secrets.token_hex(8)}"  # noqa: S108 - made 0700, must be new
    files = [*bundle.wheels, UNPACK_WHEELS.path]
    remote.upload(files, upload)
    pinned = dict(bundle.sha256)
    unpack = hashlib.sha256(UNPACK_WHEELS.path.read_bytes()).hexdigest()
    sums = "".join(f"{pinned[w.name]}  {w.name}\n" for w in bundle.wheels)
    sums += f"{unpack}  {UNPACK_WHEELS.path.name}\n"
    remote.script(INSTALL, upload, hp.AGENT_HOME, bundle.digest, stdin=sums, timeout=600,
                  waiting_for="the agent's install")  # fmt: skip


def restart_agent(remote: Remote, timeout: float = 90) -> None:
    """Restart the agent (Type=notify: returns once it has written subnet.env), then /readyz;
    one round trip."""
    restart = ["systemctl", "restart", "overlay-agent"]
    restarted, ready = remote.batch(
        [(restart, shlex.join(restart)),
         command_of(READY, str(hp.AGENT_HEALTHZ_PORT), str(timeout))],
        timeout=2 * timeout + 30, waiting_for="overlay-agent to start and answer /readyz",
        stop_at_failure=True,
    )  # fmt: skip
    if restarted.code != 0:
        raise RemoteCommandFailed(remote.target.name, shlex.join(restart), restarted.code,
                                  restarted.stderr)  # fmt: skip
    if ready.code != 0:
        raise OverlayctlError(
            f"{remote.target.name}: overlay-agent not ready: {ready.stdout.strip()[:300]}"
        )


def uninstall(remote: Remote, network: str) -> None:
    """reset: stop and disable the agent, then remove its data plane (flannel devices, routes
    into NETWORK, the FLANNEL-* chains)."""
    remote.run(["systemctl", "disable", "--now", "overlay-agent"], check=False,
               waiting_for="overlay-agent to stop")  # fmt: skip
    remote.script(DATAPLANE, network, check=False)
