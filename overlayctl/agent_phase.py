"""Acting for the agent and docker phases: install the agent offline, wait until it is ready,
and make docker's bridge follow the lease (a drop-in, or the seed's ExecStart edit)."""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote


@dataclass(frozen=True)
class AgentBundle:
    """The wheels one host installs (agent + dependencies for its Python) and their digest."""

    wheels: tuple[Path, ...]
    digest: str


INSTALL = HostScript("install-agent.sh")
UNPACK_WHEELS = HostScript("unpack_wheels.py")
READY = HostScript("agent_ready.py")
DOCKER_STATE = HostScript("docker-state.sh")


def install_agent(remote: Remote, bundle: AgentBundle) -> None:
    """Upload the wheels and the program that unpacks them into a fresh private folder, check
    every file's hash as root, then install."""
    upload = f"/tmp/overlayctl-agent-{secrets.token_hex(8)}"  # noqa: S108 - made 0700, must be new
    files = [*bundle.wheels, UNPACK_WHEELS.path]
    remote.upload(files, upload)
    sums = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n" for f in files)
    remote.script(INSTALL, upload, hp.AGENT_HOME, bundle.digest, stdin=sums, timeout=600,
                  waiting_for="the agent's install")  # fmt: skip


def restart_agent(remote: Remote, timeout: float = 90) -> None:
    """Restart the agent (Type=notify: returns once it has written subnet.env), then /readyz."""
    remote.run(["systemctl", "restart", "overlay-agent"], timeout=timeout + 30,
               waiting_for="overlay-agent to start (it writes subnet.env)")  # fmt: skip
    ready = remote.script(READY, str(hp.AGENT_HEALTHZ_PORT), str(timeout), check=False,
                          timeout=timeout + 30,
                          waiting_for="overlay-agent's /readyz to answer")  # fmt: skip
    if ready.code != 0:
        raise OverlayctlError(
            f"{remote.target.name}: overlay-agent not ready: {ready.stdout.strip()[:300]}"
        )


def read_env(remote: Remote, path: str) -> dict[str, str]:
    text = (remote.read_files([path])[path].content or b"").decode()
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"')
    return values


def docker0(remote: Remote) -> str | None:
    out = remote.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"], check=False).stdout
    match = re.search(r"inet (\S+)", out)
    return match.group(1) if match else None


def docker_runs_on(state: str, lease: str) -> bool:
    """Pure: docker0 holds the lease's .1 and dockerd runs with every flag the agent wrote
    (--bip, --ip-masq, --mtu). docker reads them only when it starts, so a new MTU (a backend
    change) needs a restart although docker0 kept its address."""
    values: dict[str, list[str]] = {}
    for line in state.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    running = values.get("arg", [])
    want = " ".join(values.get("want", [])).split()
    return values.get("docker0") == [lease] and bool(running) and all(f in running for f in want)


def docker_is_current(remote: Remote, lease: str) -> bool:
    state = remote.script(DOCKER_STATE, hp.DOCKER_OPTS_ENV, hp.SUBNET_ENV).stdout
    return docker_runs_on(state, lease)


def docker_busy(remote: Remote) -> bool:
    """Containers are running: restarting docker stops them (rolled one host at a time)."""
    out = remote.run(["docker", "ps", "-q"], check=False, timeout=60)
    return out.code == 0 and bool(out.stdout.strip())


def ensure_bip(
    remote: Remote, family: str, mode: str, *, defer_if_busy: bool = False, restart: bool = False
) -> int | None:
    """Make docker run on the lease (docker0 = FLANNEL_SUBNET, the agent's flags); returns the
    changes made (0 to 2), or None when a restart is needed on a host running containers and
    DEFER_IF_BUSY asks the caller to restart it later (hosts one at a time). RESTART: restart
    even if docker looks current (its unit changed)."""
    lease = lease_of(remote)
    changes = 0
    if mode == "execstart":
        changes += edit_execstart(remote, family)
    if restart or not docker_is_current(remote, lease):
        if defer_if_busy and docker_busy(remote):
            return None
        restart_docker(remote, lease)
        changes += 1
    return changes


def lease_of(remote: Remote) -> str:
    lease = read_env(remote, hp.SUBNET_ENV).get("FLANNEL_SUBNET")
    if not lease:
        raise OverlayctlError(f"{remote.target.name}: {hp.SUBNET_ENV} has no FLANNEL_SUBNET")
    return lease


def restart_docker(remote: Remote, lease: str) -> None:
    """Restart docker, then check that docker0 holds the lease's .1."""
    remote.run(["systemctl", "restart", "docker"], timeout=180,
               waiting_for="docker to restart")  # fmt: skip
    have = docker0(remote)
    if have != lease:
        raise OverlayctlError(
            f"{remote.target.name}: docker0 has {have or 'no address'}, the lease is {lease}"
        )


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
