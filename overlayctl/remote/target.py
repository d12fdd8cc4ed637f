"""Where and how to reach one host: what the inventory's ssh section and the host say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one host."""

    name: str
    address: str
    known_hosts: Path
    user: str = "root"
    port: int = 22
    key: Path | None = None
    sudo: bool = False
    connect_timeout: float = 10.0
    jump: tuple[str, str, int] | None = None  # (user, host, port) of a bastion to go through
