"""doctor's active probes: what each host sends and listens for (planned here, pure), run by
overlayctl/remote/scripts/doctor_probe.py on every host at once, and its answer read back.

One run, one random MARKER shared by all hosts: every probe carries it with its sender's
address, so a host counts exactly the probes of this run, per peer and per hop (`nic`: seen on
the underlay device; `overlay`: decapsulated onto flannel.VNI / flannel0), including its own
leaving (`egress`, PACKET_OUTGOING). The checks (checks/underlay.py, mtu_path.py, checksum.py)
compare what the sender sent with what the receiver saw.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from typing import Any, Protocol

from overlayctl.doctor.trace import Drop, parse_trace
from overlayctl.errors import OverlayctlError
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import RunResult

PROBE = HostScript("doctor_probe.py")
# Bytes each backend adds in front of a container's packet (agent/backends: vxlan 50, udp 28).
OVERHEAD = {"vxlan": 50, "udp": 28, "host-gw": 0}
WINDOW = 3.0  # s every host listens; the whole doctor run must fit in 15 s on 3 hosts
DELAY = 1.0  # s before sending: every host's SSH exec has started listening by then
TIMEOUT = WINDOW + 12.0  # the SSH command's own bound (python3's start on a busy host too)


class PlanContext(Protocol):
    """What plan_probes reads of context.Context (context.py imports this module's ProbeReport,
    so this module names what it reads instead of importing it back)."""

    plane: Any  # context.DataPlane
    hosts: list[str]
    pairs: list[tuple[str, str]]
    facts: dict[str, Any]  # facts.HostFacts per host

    def address(self, name: str) -> str: ...

    def lease_of(self, name: str) -> Any: ...  # etcd.cluster.LeaseInfo | None


class ScriptRunner(Protocol):
    def script(self, script: HostScript, *args: str, **kw: Any) -> RunResult: ...


@dataclass(frozen=True)
class ProbePeer:
    """A peer to probe. OVERLAY_IP: the encapsulated probe's target (the lease's .0 on its
    flannel device; host-gw: docker0's .1); empty when the peer has no lease."""

    name: str
    address: str  # PublicIP (the inventory's address)
    overlay_ip: str = ""
    vtep_mac: str = ""


@dataclass(frozen=True)
class ProbePlan:
    """What one host does in the run (the script's one JSON argument)."""

    host: str
    address: str
    backend: str
    port: int | None
    vni: int | None
    marker: str  # 16 hex digits, the same on every host of the run
    peers: tuple[ProbePeer, ...]
    overlay_dev: str = ""  # flannel.VNI, flannel0; host-gw none
    own_overlay_ip: str = ""  # the inner source of the encapsulated probe (own lease .0)
    own_vtep_mac: str = "02:00:00:00:00:01"  # the inner frame's source MAC (vxlan)
    overlay_mtu: int | None = None  # FLANNEL_MTU; None: the underlay device's MTU - overhead
    overhead: int = 0
    window: float = WINDOW
    delay: float = DELAY
    trace: bool = True

    def to_arg(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _lease_ip(subnet: str, offset: int) -> str:
    try:
        return str(IPv4Network(subnet, strict=False).network_address + offset)
    except ValueError:
        return ""


def plan_probes(ctx: PlanContext, marker: str | None = None) -> dict[str, ProbePlan]:
    """A plan for every host in a pair of CTX (a host with no peer to send to still listens).
    MARKER: the run's (tests fix it); None draws a new one."""
    marker = marker or secrets.token_hex(8)
    backend = ctx.plane.backend
    offset = 1 if backend == "host-gw" else 0  # host-gw probes docker0; others the flannel dev
    device = {"vxlan": f"flannel.{ctx.plane.vni or 1}", "udp": "flannel0"}.get(backend, "")
    involved = {name for pair in ctx.pairs for name in pair}
    plans = {}
    for host in [h for h in ctx.hosts if h in involved]:
        peers = []
        for src, dst in ctx.pairs:
            if src != host:
                continue
            lease = ctx.lease_of(dst)
            peers.append(ProbePeer(dst, ctx.address(dst),
                                   _lease_ip(lease.subnet, offset) if lease else "",
                                   lease.vtep_mac if lease else ""))  # fmt: skip
        own = ctx.lease_of(host)
        facts = ctx.facts.get(host)
        mtu = facts.subnet_env.get("FLANNEL_MTU", "") if facts is not None else ""
        plans[host] = ProbePlan(
            host=host,
            address=ctx.address(host),
            backend=backend,
            port=ctx.plane.port,
            vni=ctx.plane.vni,
            marker=marker,
            peers=tuple(peers),
            overlay_dev=device,
            own_overlay_ip=_lease_ip(own.subnet, 0) if own else "",
            own_vtep_mac=(own.vtep_mac if own and own.vtep_mac else ProbePlan.own_vtep_mac),
            overlay_mtu=int(mtu) if mtu.isdigit() else None,
            overhead=OVERHEAD.get(backend, 0),
        )
    return plans


@dataclass
class Sent:
    """One kind of probe from this host to one peer: sent, replies, RTTs, a local error."""

    sent: int = 0
    replies: int = 0
    rtt_ms: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class PathMtu:
    """The DF probe at WANTED bytes (overlay MTU + encapsulation); when it was lost, the
    largest that came back (PATH_MTU) and the smallest that did not (BELOW)."""

    wanted: int = 0
    ok: bool = True
    path_mtu: int | None = None
    below: int | None = None
    error: str = ""


@dataclass
class PeerResult:
    icmp: Sent = field(default_factory=Sent)
    encap: Sent = field(default_factory=Sent)
    mtu: PathMtu = field(default_factory=PathMtu)


@dataclass(frozen=True)
class Seen:
    """COUNT probes of KIND (i: ICMP to the PublicIP, e: the backend's probe, m: DF probe)
    from SENDER's address, WHAT (request, reply, error), at HOP (nic, overlay) in DIRECTION
    (in, out, other: for another MAC)."""

    hop: str
    direction: str
    kind: str
    sender: str
    what: str
    count: int
    max_size: int = 0
    via: str = ""
    error: tuple[int, ...] = ()


@dataclass
class ProbeReport:
    """What doctor_probe.py saw on HOST. ERROR set: the probe did not run (nothing else known)."""

    host: str
    error: str = ""
    underlay_dev: str = ""
    overlay_dev: str = ""  # empty: the backend's device is missing (or host-gw)
    underlay_mtu: int = 0
    boot_id: str = ""
    peers: dict[str, PeerResult] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    icmp_errors: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=dict)  # "Udp.InCsumErrors", "eth0.rx_dropped"
    offloads: dict[str, bool] = field(default_factory=dict)  # checksum features, active or not
    offload_source: str = ""  # "ioctl" (SIOCETHTOOL); empty: unknown (see offload_error)
    offload_error: str = ""
    trace_used: bool = False
    trace_why: str = ""  # why tracefs was not used
    kernel: str = ""
    drops: list[Drop] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the script could not do
    elapsed_s: float = 0.0

    def count(self, hop: str, kind: str, sender: str, *, direction: str = "in",
              what: str = "request") -> int:  # fmt: skip
        return sum(s.count for s in self.seen if (s.hop, s.kind, s.sender, s.direction, s.what)
                   == (hop, kind, sender, direction, what))  # fmt: skip

    @property
    def note(self) -> str:
        """One line for the report's notes: how the kernel's view was (or was not) read."""
        if self.error:
            return ""
        if self.trace_used:
            return f"kernel drop reasons read with tracefs (skb:kfree_skb, kernel {self.kernel})"
        return f"no kernel drop reasons: {self.trace_why}; counters only"


def _deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for group in ("snmp", "dev"):
        for name, values in (after.get(group) or {}).items():
            old = (before.get(group) or {}).get(name) or {}
            for key, value in values.items():
                if isinstance(value, int) and isinstance(old.get(key), int):
                    out[f"{name}.{key}"] = value - old[key]
    return out


def _sent(doc: dict[str, Any]) -> Sent:
    return Sent(int(doc.get("sent", 0)), int(doc.get("replies", 0)),
                [float(x) for x in doc.get("rtt_ms", [])], str(doc.get("error", "")))  # fmt: skip


def parse_report(host: str, text: str) -> ProbeReport:
    """The script's stdout -> ProbeReport; never raises (a bad or absent JSON sets ERROR)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if "fatal" in doc:
            return ProbeReport(host, error=f"the probe failed on the host: {doc['fatal']}")
        peers = {}
        for name, res in doc["peers"].items():
            mtu = res.get("mtu", {})
            peers[name] = PeerResult(
                _sent(res.get("icmp", {})), _sent(res.get("encap", {})),
                PathMtu(int(mtu.get("wanted", 0)), bool(mtu.get("ok", True)), mtu.get("path_mtu"),
                        mtu.get("path_mtu_below"), str(mtu.get("error", ""))),
            )  # fmt: skip
        seen = [Seen(s["hop"], s["dir"], s["kind"], s["sender"], s["what"], int(s["count"]),
                     int(s.get("max_size", 0)), s.get("via", ""), tuple(s.get("error", ())[:3]))
                for s in doc["seen"]]  # fmt: skip
        off, trace = doc.get("offloads") or {}, doc.get("trace") or {}
        return ProbeReport(
            host=host,
            underlay_dev=doc.get("underlay_dev", ""),
            overlay_dev=doc.get("overlay_dev", ""),
            underlay_mtu=int(doc.get("underlay_mtu", 0)),
            boot_id=doc.get("boot_id", ""),
            peers=peers,
            seen=seen,
            icmp_errors=list(doc.get("icmp_errors", [])),
            deltas=_deltas(doc.get("counters_before", {}), doc.get("counters_after", {})),
            offloads={str(k): bool(v) for k, v in (off.get("features") or {}).items()},
            offload_source=off.get("source", ""),
            offload_error=off.get("error", ""),
            trace_used=bool(trace.get("available")),
            trace_why=str(trace.get("why", "")),
            kernel=str(trace.get("kernel", "")),
            drops=parse_trace(trace.get("lines", [])),
            problems=[str(p) for p in doc.get("errors", [])],
            elapsed_s=float(doc.get("elapsed", 0.0)),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        last = text.strip().splitlines()[-1][:200] if text.strip() else "no output"
        return ProbeReport(host, error=f"could not read the probe's answer ({exc}): {last}")


def probe_host(remote: ScriptRunner, plan: ProbePlan) -> ProbeReport:
    """Run the probe on one host (the runner starts it on every host at once)."""
    try:
        got = remote.script(PROBE, plan.to_arg(), check=False, timeout=TIMEOUT)
    except OverlayctlError as exc:
        return ProbeReport(plan.host, error=str(exc))
    report = parse_report(plan.host, got.stdout)
    if report.error and got.code != 0:
        last = got.stderr.strip().splitlines()[-1][:200] if got.stderr.strip() else ""
        report.error = f"the probe exited {got.code}: {last or report.error}"
    return report
