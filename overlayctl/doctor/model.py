"""What `doctor` reports: findings, each naming a host (and peer), the check, the hop where
traffic stops, the evidence and the fix. Pure data; the JSON shape is the one operators pipe
to `jq` (README, "overlayctl doctor")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every check doctor runs, in the order the README documents them.
CHECKS = (
    "underlay",
    "firewall",
    "forwarding",
    "mtu",
    "routes",
    "bridge",
    "agent",
    "lease",
    "checksum",
    "rp_filter",
    "etcd",
)
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Finding:
    """One problem. HOST is where it is (the receiving side when a packet is dropped there),
    PEER the other end of a pair (None: a problem of the host alone). HOP says where traffic
    stops, in words ("node1 egress", "path node1 -> node2", "node2 INPUT"), when known."""

    host: str
    check: str
    severity: str
    message: str
    evidence: str = ""
    fix: str = ""
    peer: str | None = None
    hop: str | None = None

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def sort_key(self) -> tuple[int, str, int, str]:
        """Worst first: errors before warnings, then hosts by name, then the checks' order."""
        return (SEVERITIES.index(self.severity), self.host, CHECKS.index(self.check),
                self.peer or "")  # fmt: skip

    def to_doc(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "peer": self.peer,
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
            "fix": self.fix,
            "hop": self.hop,
        }


@dataclass
class DoctorReport:
    """FINDINGS: the problems found. ERRORS: what doctor itself could not do (a host it could
    not reach over SSH, etcd that did not answer). NOTES: how it looked (tracefs or counters)."""

    hosts: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not any(f.severity == "error" for f in self.findings)

    def sorted_findings(self) -> list[Finding]:
        return sorted(set(self.findings), key=lambda f: f.sort_key)
