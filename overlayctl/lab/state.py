"""What a lab is made of, saved as JSON so `down` can remove exactly that, even after a crash."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overlayctl.errors import BadInput

LABS_ROOT = Path(os.environ.get("OVERLAYCTL_LABS", "/var/lib/overlayctl/labs"))
_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
WORKSTATION_OFFSET = 10
SEED_FIRST_HOST_OFFSET = 154  # the seed runbook's node1 is 192.168.255.154


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadInput(
            f"lab name {name!r}: use 1-12 lower-case letters and digits, starting with a letter"
        )
    return name


@dataclass
class HostRecord:
    name: str
    address: str
    netns: str
    cgroup: str
    root: str = ""  # merged root filesystem (full hosts)
    pid: int | None = None  # systemd-nspawn's PID (full hosts)


@dataclass
class LabState:
    name: str
    tier: str  # "full" (systemd-nspawn) or "light" (namespaces only)
    subnet: str
    switch_netns: str
    workstation_netns: str
    workstation_address: str
    template: str = ""
    hosts: list[HostRecord] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    @property
    def inventory(self) -> Path:
        return self.dir / "cluster.yaml"

    @property
    def ssh_key(self) -> Path:
        return self.dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "ssh" / "known_hosts"

    def host(self, name: str) -> HostRecord:
        for h in self.hosts:
            if h.name == name:
                return h
        raise BadInput(
            f"lab {self.name}: no host named {name!r} (hosts: "
            + ", ".join(h.name for h in self.hosts)
            + ")"
        )

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.dir / "lab.json")


def lab_dir(name: str) -> Path:
    return LABS_ROOT / name


def load(name: str) -> LabState | None:
    path = lab_dir(name) / "lab.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    hosts = [HostRecord(**h) for h in raw.pop("hosts", [])]
    return LabState(**raw, hosts=hosts)


def all_labs() -> list[LabState]:
    if not LABS_ROOT.is_dir():
        return []
    found = (load(p.name) for p in sorted(LABS_ROOT.iterdir()) if p.is_dir())
    return [lab for lab in found if lab is not None]


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise `up`/`down` of one lab name across processes."""
    LABS_ROOT.mkdir(parents=True, exist_ok=True)
    with open(LABS_ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def addresses(subnet: str, count: int) -> tuple[str, list[str], int]:
    """(workstation address, host addresses, prefix length) for COUNT hosts in SUBNET.

    Hosts start at the seed's .154 when they fit below the broadcast address, else right after
    the workstation's .10.
    """
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise BadInput(f"--subnet {subnet!r}: {exc}") from None
    last_usable = net.num_addresses - 2
    first = SEED_FIRST_HOST_OFFSET
    if first + count - 1 > last_usable:
        first = WORKSTATION_OFFSET + 1
    if first + count - 1 > last_usable:
        raise BadInput(f"--subnet {subnet}: too small for {count} hosts and a workstation")
    hosts = [str(net.network_address + first + i) for i in range(count)]
    return str(net.network_address + WORKSTATION_OFFSET), hosts, net.prefixlen
