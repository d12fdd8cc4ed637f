"""etcd: from the host itself, the agent cannot reach any of its etcd endpoints (the facts
script connects to each endpoint of its options over TCP and completes a TLS handshake with the
agent's CA, certificate and key, 2 s each), or the agent's client certificate is expired or not
yet valid by the HOST's clock (the certificate's public PEM and the host's time.time() come
with the facts; parsed here with `cryptography`). A certificate that expires within 30 days is
a warning."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from overlayctl.doctor.context import Context
from overlayctl.doctor.facts import HostFacts
from overlayctl.doctor.model import Finding
from overlayctl.doctor.peers import answered

CHECK = "etcd"
SOON_S = 30 * 86400
ROTATE = "overlayctl certs rotate"


def _reach(name: str, f: HostFacts) -> list[Finding]:
    probes = f.etcd
    if not probes or any(p.get("tcp") and p.get("tls") in (True, None) for p in probes):
        return []
    tls_only = all(p.get("tcp") for p in probes)
    return [
        Finding(
            name,
            CHECK,
            "error",
            "the agent's etcd endpoints all refuse this host's TLS identity"
            if tls_only
            else "the agent reaches none of its etcd endpoints from this host",
            "\n".join(f"{p.get('endpoint')}: {p.get('error') or 'no answer'}" for p in probes),
            ROTATE
            if tls_only
            else "check etcd runs on the members (systemctl status etcd) and "
            "that the host reaches their client port (2379/tcp) through the firewalls",
            hop=f"{name} -> etcd",
        )
    ]


def _validity(ctx: Context, name: str, f: HostFacts) -> list[Finding]:
    if not f.client_cert_pem:
        return []
    try:
        cert = x509.load_pem_x509_certificate(f.client_cert_pem.encode())
    except ValueError as exc:
        return [
            Finding(
                name,
                CHECK,
                "error",
                f"the agent's client certificate cannot be read: {exc}",
                f.agent_options.get("etcd-certfile", ""),
                ROTATE,
                hop=name,
            )
        ]
    now = f.time if f.time is not None else ctx.now
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    clock = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    evidence = (
        f"{f.agent_options.get('etcd-certfile', 'client certificate')}: valid "
        f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()}"
        f"; the host's clock {clock}"
    )
    if now > end:
        return [
            Finding(
                name,
                CHECK,
                "error",
                "the agent's client certificate has expired",
                evidence,
                ROTATE,
                hop=name,
            )
        ]
    if now < start:
        return [
            Finding(
                name,
                CHECK,
                "error",
                "the agent's client certificate is not valid yet by this host's clock",
                evidence,
                "fix the host's clock (timedatectl; NTP), or " + ROTATE,
                hop=name,
            )
        ]
    if end - now < SOON_S:
        return [
            Finding(
                name,
                CHECK,
                "warning",
                f"the agent's client certificate expires in {(end - now) / 86400:.0f} days",
                evidence,
                ROTATE,
                hop=name,
            )
        ]
    return []


def run(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for name, f in answered(ctx):
        found += _reach(name, f)
        found += _validity(ctx, name, f)
    return found
