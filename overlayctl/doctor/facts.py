"""A host's facts for doctor's host-level checks: gathered in one round trip by
remote/scripts/doctor_facts.py (read-only, bounded in time, one JSON document), parsed here.

Parsing is pure and never raises: output that is not the script's JSON gives a HostFacts with
ERROR set, which the checks read as "nothing known" (they say nothing rather than guess).
The firewall's text (`iptables-save -c`) is parsed into tables, chains and rules with their
packet counters here too, so both the firewall and the forwarding checks walk the same rules.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory.model import Host
from overlayctl.remote.scripts import HostScript

if TYPE_CHECKING:
    from overlayctl.remote.ssh import Remote

SCRIPT = HostScript("doctor_facts.py")
TIMEOUT_S = 40  # the script's own deadline is 25 s; SSH and python3's start come on top
MAX_CONTAINERS = 5  # containers whose netns doctor enters for eth0's MTU


class DataPlane(Protocol):
    """What the facts need of context.DataPlane (context.py imports this module's HostFacts,
    so this module names the fields it reads instead of importing it back)."""

    backend: str
    vni: int | None
    port: int | None


@dataclass(frozen=True)
class Rule:
    """One `-A CHAIN ...` line of `iptables-save -c`: its words after the chain, its counters."""

    table: str
    chain: str
    index: int  # 1-based position in its chain (as `iptables -D CHAIN N` counts)
    args: tuple[str, ...]
    packets: int = 0
    bytes: int = 0

    @property
    def target(self) -> str:
        for flag in ("-j", "--jump", "-g", "--goto"):
            if flag in self.args:
                return self.args[self.args.index(flag) + 1]
        return ""

    @property
    def goto(self) -> bool:
        return "-g" in self.args or "--goto" in self.args

    @property
    def text(self) -> str:
        """The rule as `iptables -S` prints it (what an operator greps for)."""
        return shlex.join(["-A", self.chain, *self.args])

    @property
    def delete_command(self) -> str:
        """The exact command that removes this rule."""
        return shlex.join(["iptables", "-t", self.table, "-D", self.chain, *self.args])


@dataclass
class Chain:
    name: str
    policy: str  # ACCEPT / DROP for a built-in chain, "-" for a user chain
    packets: int = 0  # the policy's counters
    bytes: int = 0
    rules: list[Rule] = field(default_factory=list)


Tables = dict[str, dict[str, Chain]]  # table -> chain -> Chain

_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s*")


def parse_iptables_save(text: str) -> Tables:
    """`iptables-save -c` (or without -c) -> tables of chains of rules, in order."""
    tables: Tables = {}
    table: dict[str, Chain] | None = None
    name = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            name = line[1:]
            table = tables.setdefault(name, {})
        elif table is None or not line or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            words = line[1:].split()
            counts = _COUNTERS.match(words[2]) if len(words) > 2 else None
            table[words[0]] = Chain(words[0], words[1] if len(words) > 1 else "-",
                                    int(counts.group(1)) if counts else 0,
                                    int(counts.group(2)) if counts else 0)  # fmt: skip
        else:
            counts = _COUNTERS.match(line)
            try:
                words = shlex.split(line[counts.end() :] if counts else line)
            except ValueError:
                continue
            if len(words) < 2 or words[0] != "-A":
                continue
            chain = table.setdefault(words[1], Chain(words[1], "-"))
            chain.rules.append(Rule(name, words[1], len(chain.rules) + 1, tuple(words[2:]),
                                    int(counts.group(1)) if counts else 0,
                                    int(counts.group(2)) if counts else 0))  # fmt: skip
    return tables


def parse_firewalld_zones(text: str) -> dict[str, dict[str, str]]:
    """`firewall-cmd --list-all-zones` (or --list-all-policies) -> {zone: {key: value}}.
    A zone's header line is its name (`public (active)`); its keys are indented `key: value`."""
    zones: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            zone = line.split()[0]
            current = zones.setdefault(zone, {"header": line.strip()})
            last = ""
        elif current is not None:
            key, sep, value = line.strip().partition(":")
            if sep and re.fullmatch(r"[a-z0-9-]+( [a-z0-9-]+)?", key):
                current[key] = value.strip()
                last = key
            elif last:  # a rich rule's continuation line
                current[last] = (current[last] + "\n" + line.strip()).strip()
    return zones


@dataclass(frozen=True)
class RouteGet:
    """One `ip -j route get` the script asked the kernel (read-only).
    KIND: peer (how its PublicIP is reached), rp-overlay (a packet from the peer's subnet
    arriving on the overlay device), rp-underlay (its encapsulated packet arriving)."""

    kind: str
    args: tuple[str, ...]
    route: dict[str, Any] | None
    error: str = ""


@dataclass
class HostFacts:
    """What doctor_facts.py found on HOST. ERROR set: nothing else is known."""

    host: str
    error: str = ""
    time: float | None = None  # the host's clock (epoch s) as the script ran
    uptime: float | None = None  # s since boot (systemd's monotonic timestamps count from it)
    kernel: str = ""
    sysctl: dict[str, str] = field(default_factory=dict)  # net.ipv4.ip_forward, ...rp_filter
    iptables: Tables | None = None  # None: iptables-save missing or failed
    iptables_text: str = ""
    ip6tables: Tables | None = None
    nft: dict[str, Any] | None = None  # `nft -j list ruleset`; None: nft missing or failed
    firewalld_running: bool = False
    firewalld_active: str = ""  # `--get-active-zones` as printed
    firewalld_default_zone: str = ""  # `--get-default-zone` ("" when it did not say)
    firewalld_zones: dict[str, dict[str, str]] = field(default_factory=dict)
    firewalld_policies: dict[str, dict[str, str]] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)  # `ip -j -d link show`
    addrs: list[dict[str, Any]] = field(default_factory=list)  # `ip -j -4 addr show`
    routes: list[dict[str, Any]] = field(default_factory=list)  # `ip -j -4 route show`
    neigh: list[dict[str, Any]] = field(default_factory=list)  # `ip -j -4 neigh show`
    fdb: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # vxlan dev -> entries
    route_gets: list[RouteGet] = field(default_factory=list)
    subnet_env: dict[str, str] = field(default_factory=dict)
    docker_opts: dict[str, str] = field(default_factory=dict)  # /run/flannel/docker
    agent_options: dict[str, Any] = field(default_factory=dict)  # kept names only, no secrets
    agent_unit: dict[str, str] = field(default_factory=dict)  # systemctl show properties
    readyz: dict[str, Any] = field(default_factory=dict)  # status, body (, error)
    healthz: dict[str, Any] = field(default_factory=dict)
    docker_unit: dict[str, str] = field(default_factory=dict)
    dockerd_args: list[str] = field(default_factory=list)  # the running dockerd's argv
    daemon_json: dict[str, Any] = field(default_factory=dict)  # mtu, bip, ... keys only
    docker_networks: list[dict[str, Any]] | None = None  # None: docker not active
    containers: list[dict[str, Any]] | None = None  # at most MAX_CONTAINERS
    etcd: list[dict[str, Any]] = field(default_factory=list)  # endpoint, tcp, tls, error
    client_cert_pem: str = ""  # the agent's client certificate(s), public part only
    missing: list[str] = field(default_factory=list)  # binaries not installed
    elapsed_s: float = 0.0

    # -- helpers the checks share ---------------------------------------------------------------

    def link(self, name: str) -> dict[str, Any] | None:
        return next((x for x in self.links if x.get("ifname") == name), None)

    def address_of(self, name: str) -> list[str]:
        """NAME's IPv4 addresses as CIDRs (`172.21.5.1/24`)."""
        return [f"{i['local']}/{i['prefixlen']}" for a in self.addrs if a.get("ifname") == name
                for i in a.get("addr_info", []) if "local" in i]  # fmt: skip

    def device_with(self, address: str) -> str:
        """The interface holding ADDRESS (the underlay, for the inventory's address)."""
        return next((a["ifname"] for a in self.addrs for i in a.get("addr_info", [])
                     if i.get("local") == address), "")  # fmt: skip

    def sysctl_int(self, key: str) -> int | None:
        value = self.sysctl.get(key, "")
        return int(value) if value.strip().lstrip("-").isdigit() else None

    @property
    def subnet(self) -> ipaddress.IPv4Interface | None:
        """subnet.env's FLANNEL_SUBNET (the lease's .1 with its prefix)."""
        try:
            return ipaddress.IPv4Interface(self.subnet_env["FLANNEL_SUBNET"])
        except (KeyError, ValueError):
            return None


def overlay_device(plane: DataPlane) -> str | None:
    """The device the backend creates: flannel.VNI (vxlan), flannel0 (udp); host-gw none."""
    return {"vxlan": f"flannel.{plane.vni or 1}", "udp": "flannel0"}.get(plane.backend)


def _command_text(doc: Any) -> str | None:
    """A command's captured stdout, None when it did not run or failed."""
    if isinstance(doc, dict) and doc.get("rc") == 0:
        return str(doc.get("out", ""))
    return None


def parse_facts(host: str, text: str) -> HostFacts:
    """The script's stdout -> HostFacts; never raises (a bad output sets ERROR)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("not doctor_facts.py's output (version 1)")
        return _from_doc(host, doc)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        head = text.strip().splitlines()[-1][:200] if text.strip() else "no output"
        return HostFacts(host, error=f"could not read the host's facts ({exc}): {head}")


def _from_doc(host: str, doc: dict[str, Any]) -> HostFacts:
    ipt = _command_text(doc.get("iptables_save"))
    ip6t = _command_text(doc.get("ip6tables_save"))
    nft = _command_text(doc.get("nft"))
    fwd = doc.get("firewalld") or {}
    return HostFacts(
        host,
        time=float(doc["time"]),
        uptime=float(doc.get("uptime") or 0) or None,
        kernel=str(doc.get("kernel", "")),
        sysctl={str(k): str(v) for k, v in (doc.get("sysctl") or {}).items()},
        iptables=parse_iptables_save(ipt) if ipt is not None else None,
        iptables_text=ipt or "",
        ip6tables=parse_iptables_save(ip6t) if ip6t is not None else None,
        nft=json.loads(nft) if nft and nft.strip() else None,
        firewalld_running=_command_text(fwd.get("state")) is not None,
        firewalld_active=_command_text(fwd.get("active")) or "",
        firewalld_default_zone=(_command_text(fwd.get("default")) or "").strip(),
        firewalld_zones=parse_firewalld_zones(_command_text(fwd.get("zones")) or ""),
        firewalld_policies=parse_firewalld_zones(_command_text(fwd.get("policies")) or ""),
        links=list(doc.get("links") or []),
        addrs=list(doc.get("addrs") or []),
        routes=list(doc.get("routes") or []),
        neigh=list(doc.get("neigh") or []),
        fdb={str(k): list(v or []) for k, v in (doc.get("fdb") or {}).items()},
        route_gets=[
            RouteGet(str(g["kind"]), tuple(g["args"]), g.get("route"), g.get("error", ""))
            for g in doc.get("route_gets") or []
        ],
        subnet_env=dict(doc.get("subnet_env") or {}),
        docker_opts=dict(doc.get("docker_opts") or {}),
        agent_options=dict(doc.get("agent_options") or {}),
        agent_unit=dict(doc.get("agent_unit") or {}),
        readyz=dict(doc.get("readyz") or {}),
        healthz=dict(doc.get("healthz") or {}),
        docker_unit=dict(doc.get("docker_unit") or {}),
        dockerd_args=[str(a) for a in doc.get("dockerd_args") or []],
        daemon_json=dict(doc.get("daemon_json") or {}),
        docker_networks=doc.get("docker_networks"),
        containers=doc.get("containers"),
        etcd=list(doc.get("etcd") or []),
        client_cert_pem=str(doc.get("client_cert_pem") or ""),
        missing=[str(m) for m in doc.get("missing") or []],
        elapsed_s=float(doc.get("elapsed_s") or 0),
    )


def script_params(host: Host, plane: DataPlane, leases: Sequence[LeaseInfo] = ()) -> str:
    """The script's one argument: what it needs to know about this host and its peers."""
    peers = [{"public_ip": lease.public_ip, "subnet": lease.subnet} for lease in leases
             if not lease.error and lease.public_ip != str(host.address)]  # fmt: skip
    return json.dumps({
        "address": str(host.address), "backend": plane.backend, "vni": plane.vni,
        "port": plane.port, "healthz_port": hp.AGENT_HEALTHZ_PORT,
        "subnet_env": hp.SUBNET_ENV, "docker_opts": hp.DOCKER_OPTS_ENV,
        "agent_env": sorted(set(hp.AGENT_ENV.values())), "peers": peers,
        "max_containers": MAX_CONTAINERS,
    })  # fmt: skip


def gather_facts(
    remote: Remote, host: Host, plane: DataPlane, leases: Sequence[LeaseInfo] = ()
) -> HostFacts:
    """Run the facts script on HOST (one round trip). LEASES (etcd's) name the peers whose
    PublicIPs and subnets the kernel is asked about. Never raises for a bad answer: a failed
    command or unreadable output is a HostFacts with ERROR."""
    try:
        out = remote.script(SCRIPT, script_params(host, plane, leases), check=False,
                            timeout=TIMEOUT_S, waiting_for="doctor's facts")  # fmt: skip
    except OverlayctlError as exc:
        return HostFacts(host.name, error=str(exc))
    if out.code != 0:
        last = (out.stderr.strip().splitlines() or [f"exit {out.code}"])[-1]
        return HostFacts(host.name, error=f"doctor's facts script failed: {last[:300]}")
    return parse_facts(host.name, out.stdout)
