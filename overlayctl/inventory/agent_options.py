"""What `cluster.agent_options` may not say, beyond overlayctl's own flags (parse.py).

The options land in the agent's env file (mode 0644, readable by every local user), on the
agent's command line (in every process listing) and in `plan`'s diff. So nothing secret may be
in them, and nothing that widens what the agent exposes or where it writes as root:

- ``--etcd-password``: a secret in a 0644 file and argv; ``--etcd-password-file`` names a file
  the operator keeps 0600 instead.
- ``--config-file``: a file of further options that no check here ever sees (a password, an
  outside health address, overlayctl's own flags).
- ``--healthz-ip`` other than a loopback address: /healthz, /readyz and /metrics are meant for
  the host only (no firewall rule opens them).
- ``--docker-opts-file`` (and ``--subnet-file``, should overlayctl ever leave it to the
  inventory) outside /run/: the root agent writes that file; /etc/cron.d/x would be code run as
  root.
"""

from __future__ import annotations

import ipaddress
import posixpath

from overlayctl.errors import BadInput

# flag -> why it is refused whatever its value
_REFUSED = {
    "--etcd-password": "would put the password in the 0644 env file, the agent's command line "
    "and plan's diff; keep it in a root-only file and name it with --etcd-password-file=PATH",
    "--config-file": "would read options no inventory check sees (secrets, addresses, "
    "overlayctl's own flags); list the options in agent_options instead",
}
_RUN = "/run/"


def check_agent_option(where: str, flag: str, value: str | None) -> None:
    """Raise BadInput naming WHERE (`cluster.agent_options[2]`) when FLAG=VALUE is refused."""
    if flag in _REFUSED:
        raise BadInput(f"{where}: {flag} {_REFUSED[flag]}")
    if flag == "--healthz-ip":
        _loopback(where, flag, value)
    elif flag in ("--docker-opts-file", "--subnet-file"):
        _under_run(where, flag, value)


def _loopback(where: str, flag: str, value: str | None) -> None:
    try:
        loopback = ipaddress.ip_address(value or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BadInput(
            f"{where}: {flag}={value or ''} is not a loopback address: the agent's health and "
            "metrics are for this host only (127.0.0.1 is the default)"
        )


def _under_run(where: str, flag: str, value: str | None) -> None:
    path = value or ""
    normal = posixpath.normpath(path) if path.startswith("/") else ""
    if not normal.startswith(_RUN) or normal != path.rstrip("/"):
        raise BadInput(
            f"{where}: {flag}={path} is not a file under {_RUN}: the agent writes it as root "
            "(the default is /run/flannel/docker)"
        )
