"""Run on the first etcd member with `python3 -c` (facts): the etcd running here as it runs NOW,
whoever configured it, printed as ONE JSON document. Standard library only, Python 3.9.

    python3 -c "$(cat etcd_found.py)" PREFIX CA PEER_CERT PEER_KEY CLIENT_CERT CLIENT_KEY

Why not etcdctl with the inventory's endpoints: on a cluster built by hand those say https
where etcd serves plain http (or the other way round), and the question is exactly what it
serves. So the URLs come from the running etcd's own environment (/proc/PID/environ, what its
unit's EnvironmentFile gave it) or its flags, 0.0.0.0 read as 127.0.0.1. Through them:
- the members, from the peer port's `GET /members` (what a joining member reads: every member's
  ID, name and peer URLs as etcd records them), with the peer certificate when peers speak
  https; one request, no etcdctl process, whatever the clients' scheme or auth;
- flanneld's v2 keys under PREFIX (`GET /v2/keys<PREFIX>?recursive=true`, TTLs included, as
  etcd_v2_dump.py reads them; 404 when v2 is off or the prefix absent), only where v2 can be on
  (plain-http clients, or ETCD_ENABLE_V2 set), with the client certificate for https. Parsed
  on the workstation by overlayctl/etcd/v2.py's parse_dump.

Prints {} when no etcd runs here. Never writes anything; every request has a 2 s timeout.
Parsing happens on the workstation (overlayctl/plan/handbuilt.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def etcd_pid() -> int | None:
    """The process named etcd in this host's PID namespace, if any."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == "etcd":
                    return int(entry)
        except OSError:
            continue
    return None


def settings(pid: int) -> dict[str, str]:
    """PID's ETCD_* environment, its --flag=value arguments (as ETCD_FLAG) on top."""
    found: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            for item in env.read().split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep and key.startswith("ETCD_"):
                    found[key] = value
        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
            args = cmd.read().decode(errors="replace").split("\0")
    except OSError:
        return found
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            name, sep, value = arg.lstrip("-").partition("=")
            if not sep:  # `--flag value`, or a bare boolean `--enable-v2`
                following = args[i + 1] if i + 1 < len(args) else ""
                value = "true" if not following or following.startswith("-") else following
            found["ETCD_" + name.upper().replace("-", "_")] = value
    return found


def local_url(found: dict[str, str], setting: str, port: int) -> str:
    """A URL of SETTING (listen URLs) reachable from here: loopback first."""
    urls = [u.strip() for u in found.get(setting, "").split(",") if u.strip()]
    urls = urls or [f"http://localhost:{port}"]  # etcd's default
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname == "localhost" or _local(parts.hostname or ""):
            return f"{parts.scheme}://127.0.0.1:{parts.port or port}"
    return urls[0]


def _local(host: str) -> bool:
    """An address this host reaches itself at: loopback, or a listen-on-every-address one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def request(url: str, context: ssl.SSLContext | None, body: bytes | None = None) -> dict[str, Any]:
    """{"status": HTTP status, "body": text (at most 8 MiB: flanneld's keys are a few KiB)} or
    {"error": why}."""
    if not url.startswith(("http://", "https://")):
        return {"error": f"not an etcd client URL: {url[:200]}"}
    try:  # only http(s), checked above
        with urllib.request.urlopen(url, data=body, timeout=2, context=context) as answer:  # noqa: S310
            return {"status": answer.status, "body": answer.read(8 << 20).decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode(errors="replace")[:2000]}
    except (OSError, ValueError) as exc:
        return {"error": str(exc)[:500]}


def context(url: str, ca: str, cert: str, key: str) -> ssl.SSLContext | None:
    """For an https URL: the host's CA and CERT/KEY when it has them (else no verification: the
    answer only informs a plan, and nothing but a read is sent)."""
    if not url.startswith("https:"):
        return None
    if not os.path.exists(ca):
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified
    verified = ssl.create_default_context(cafile=ca)
    verified.check_hostname = False  # 127.0.0.1 need not be in a member's certificate
    if os.path.exists(cert) and os.path.exists(key):
        verified.load_cert_chain(cert, key)
    return verified


def main(argv: list[str]) -> dict[str, Any]:
    prefix, ca, peer_cert, peer_key, cert, key = argv
    pid = etcd_pid()
    if pid is None:
        return {}
    found = settings(pid)
    peer = local_url(found, "ETCD_LISTEN_PEER_URLS", 2380)
    client = local_url(found, "ETCD_LISTEN_CLIENT_URLS", 2379)
    members = request(f"{peer}/members", context(peer, ca, peer_cert, peer_key))
    v2: dict[str, Any] = {"skipped": "v2 is off"}
    if client.startswith("http:") or found.get("ETCD_ENABLE_V2", "").lower() == "true":
        url = f"{client}/v2/keys{urllib.parse.quote(prefix)}?recursive=true"
        v2 = request(url, context(client, ca, cert, key))
    return {"client_url": client, "peer_url": peer, "members": members, "v2": v2}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:7])))
