"""``/run/flannel/subnet.env`` and ``/run/flannel/docker``: flannel's formats, written atomically.

Paths are parameters; the defaults are flannel's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

DEFAULT_SUBNET_FILE = Path("/run/flannel/subnet.env")
DEFAULT_DOCKER_FILE = Path("/run/flannel/docker")


@dataclass(frozen=True)
class SubnetEnv:
    """The content of a subnet.env file."""

    network: IPv4Network
    subnet: IPv4Network  # the leased subnet; the file holds its .1 as FLANNEL_SUBNET
    mtu: int
    ipmasq: bool

    @property
    def gateway(self) -> IPv4Interface:
        """The .1 of the subnet with its length: docker's ``--bip``."""
        return IPv4Interface((int(self.subnet.network_address) + 1, self.subnet.prefixlen))


def write_atomic(path: str | os.PathLike[str], content: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``content``: temp file in the same dir, fsync, rename, fsync dir."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def format_subnet_env(env: SubnetEnv) -> str:
    """flannel's exact subnet.env text."""
    return (
        f"FLANNEL_NETWORK={env.network}\n"
        f"FLANNEL_SUBNET={env.gateway}\n"
        f"FLANNEL_MTU={env.mtu}\n"
        f"FLANNEL_IPMASQ={_bool(env.ipmasq)}\n"
    )


def format_docker_opts(env: SubnetEnv) -> str:
    """What ``mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS`` derives from subnet.env.

    ``--ip-masq`` is the inverse of FLANNEL_IPMASQ (if the agent masquerades, docker must not).
    """
    opts = {
        "DOCKER_OPT_BIP": f"--bip={env.gateway}",
        "DOCKER_OPT_IPMASQ": f"--ip-masq={_bool(not env.ipmasq)}",
        "DOCKER_OPT_MTU": f"--mtu={env.mtu}",
    }
    lines = [f'{name}="{value}"' for name, value in opts.items()]
    lines.append('DOCKER_NETWORK_OPTIONS=" ' + " ".join(opts.values()) + '"')
    return "\n".join(lines) + "\n"


def write_subnet_env(env: SubnetEnv, path: str | os.PathLike[str] = DEFAULT_SUBNET_FILE) -> None:
    """Write subnet.env atomically."""
    write_atomic(path, format_subnet_env(env))


def write_docker_opts(env: SubnetEnv, path: str | os.PathLike[str] = DEFAULT_DOCKER_FILE) -> None:
    """Write the docker options file atomically."""
    write_atomic(path, format_docker_opts(env))


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines (quotes stripped, comments and junk ignored)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def read_subnet_env(path: str | os.PathLike[str] = DEFAULT_SUBNET_FILE) -> SubnetEnv | None:
    """The subnet.env left by a previous run, or None if missing or unreadable."""
    try:
        values = parse_env(Path(path).read_text(encoding="utf-8", errors="replace"))
        network = IPv4Network(values["FLANNEL_NETWORK"], strict=False)
        subnet = IPv4Interface(values["FLANNEL_SUBNET"]).network
        mtu = int(values.get("FLANNEL_MTU", "0") or 0)
        ipmasq = values.get("FLANNEL_IPMASQ", "false").strip().lower() == "true"
    except (OSError, KeyError, ValueError):
        return None
    return SubnetEnv(network=network, subnet=subnet, mtu=mtu, ipmasq=ipmasq)


def read_previous_subnet(path: str | os.PathLike[str] = DEFAULT_SUBNET_FILE) -> IPv4Network | None:
    """The subnet leased by a previous run (FLANNEL_SUBNET's network), for subnet choice."""
    env = read_subnet_env(path)
    return env.subnet if env is not None else None
