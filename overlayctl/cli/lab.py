"""`overlayctl lab ...`: emulated hosts on this machine."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """Emulated Debian hosts (systemd, sshd, docker, etcd) on this machine."""
