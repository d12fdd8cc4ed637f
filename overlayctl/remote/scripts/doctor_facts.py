"""Run on a host with `python3 -c` (doctor): everything the host-level checks look at, in one
round trip, printed as ONE JSON document. Standard library only, Python 3.9.

    python3 -c "$(cat doctor_facts.py)" PARAMS_JSON

PARAMS_JSON (one argument, quoted by Remote): address (the host's inventory address), backend,
vni, port, healthz_port, subnet_env, docker_opts, agent_env (candidate paths), peers
([{"public_ip", "subnet"}]), max_containers.

Read-only by design: it runs only listing commands (`iptables-save`, `nft list`, `ip ... show`,
`ip route get`, `bridge fdb show`, `firewall-cmd --list-*`, `systemctl show`, `docker inspect`),
reads files and /proc/sys, and opens TCP/TLS connections to the agent's etcd endpoints. It
never writes a file, a rule, a route or a sysctl. A missing binary is recorded as a fact
(`missing`), not an error. Every command has a timeout and the whole run a deadline, so a hung
docker or firewalld costs seconds, not the doctor run. Secrets never leave the host: of the
agent's options only the names below are kept (no password), and of the client certificate
file only its CERTIFICATE blocks (the TLS handshake reads the key here, nothing prints it).
Parsing happens on the workstation (overlayctl/doctor/facts.py), where it is tested.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def new_host(deadline_s: float = 25.0) -> dict[str, Any]:
    """The run's state: its start, its deadline (the whole script; each command gets what is
    left, at most 6 s) and the binaries found missing."""
    return {"start": time.monotonic(), "deadline_s": deadline_s, "missing": []}


def left(host: dict[str, Any]) -> float:
    return host["deadline_s"] - (time.monotonic() - host["start"])


def run(host: dict[str, Any], *argv: str) -> dict[str, Any]:
    """Run a listing command: its exit code, stdout and stderr's end (rc None: it did not run)."""
    if shutil.which(argv[0]) is None:
        if argv[0] not in host["missing"]:
            host["missing"].append(argv[0])
        return {"rc": None, "out": "", "err": f"{argv[0]}: not installed"}
    timeout = min(6.0, left(host))
    if timeout <= 0.2:
        return {"rc": None, "out": "", "err": "skipped: doctor's time on this host ran out"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"rc": None, "out": "", "err": f"timed out after {timeout:.1f} s"}
    except OSError as exc:
        return {"rc": None, "out": "", "err": str(exc)}
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr[-2000:]}


def run_json(host: dict[str, Any], *argv: str) -> Any:
    got = run(host, *argv)
    try:
        return json.loads(got["out"]) if got["rc"] == 0 and got["out"].strip() else None
    except ValueError:
        return None


def read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def env_file(text: str | None) -> dict[str, str]:
    """KEY=VALUE lines as a shell would read them (quotes removed); comments skipped."""
    values = {}
    for line in (text or "").splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            values[key] = " ".join(words)
    return values


def agent_options(paths: list[str]) -> dict[str, Any]:
    """The agent's env file: the kept options of FLANNEL_OPTIONS (never a password), and its
    endpoints variable."""
    kept_names = (
        "etcd-endpoints", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "iface", "public-ip",
        "subnet-lease-renew-margin", "subnet-lease-ttl", "iptables-forward-rules",
        "no-iptables-forward-rules", "healthz-port", "ip-masq",
    )  # fmt: skip
    for path in paths:
        env = env_file(read(path))
        if not env:
            continue
        kept: dict[str, Any] = {"env_file": path}
        words = shlex.split(env.get("FLANNEL_OPTIONS", ""))
        for i, word in enumerate(words):
            name, eq, value = word.lstrip("-").partition("=")
            if name not in kept_names:
                continue
            if not eq and i + 1 < len(words) and not words[i + 1].startswith("-"):
                value = words[i + 1]
            kept[name] = value if (eq or value) else True
        for key in ("FLANNELD_ETCD_ENDPOINTS", "FLANNEL_ETCD_ENDPOINTS"):
            if key in env and "etcd-endpoints" not in kept:
                kept["etcd-endpoints"] = env[key]
        return kept
    return {}


def http_get(port: int, path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return {"status": answer.status, "body": answer.read(4096).decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(4096).decode(errors="replace")}
    except (OSError, ValueError) as exc:
        return {"status": None, "body": "", "error": str(exc)}


def etcd_reach(
    options: dict[str, Any], host: dict[str, Any], limit: int = 5
) -> list[dict[str, Any]]:
    """TCP connect and TLS handshake (the agent's CA, cert and key) to each endpoint."""
    found = []
    urls = [u.strip() for u in str(options.get("etcd-endpoints", "")).split(",") if u.strip()]
    for url in urls[:5]:
        m = re.match(r"^(https?)://(\[[^\]]+\]|[^:/]+)(?::(\d+))?", url)
        if not m:
            found.append({"endpoint": url, "error": "not a URL"})
            continue
        scheme, name, port = m.group(1), m.group(2).strip("[]"), int(m.group(3) or 2379)
        probe: dict[str, Any] = {"endpoint": url, "tcp": False, "tls": None, "error": ""}
        timeout = max(0.2, min(2.0, left(host)))
        try:
            with socket.create_connection((name, port), timeout=timeout) as sock:
                probe["tcp"] = True
                if scheme == "https":
                    probe["tls"] = False
                    ctx = ssl.create_default_context(cafile=options.get("etcd-cafile") or None)
                    if options.get("etcd-certfile"):
                        ctx.load_cert_chain(options["etcd-certfile"], options.get("etcd-keyfile"))
                    with ctx.wrap_socket(sock, server_hostname=name):
                        probe["tls"] = True
        except (OSError, ssl.SSLError, ValueError) as exc:
            probe["error"] = f"{type(exc).__name__}: {exc}"
        found.append(probe)
    return found


def containers(host: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Running containers (at most LIMIT): networks, addresses, and eth0's MTU in their netns."""
    ids = run(host, "docker", "ps", "-q", "--no-trunc")["out"].split()[:limit]
    found = []
    for doc in (run_json(host, "docker", "inspect", *ids) if ids else None) or []:
        nets = (doc.get("NetworkSettings") or {}).get("Networks") or {}
        pid = (doc.get("State") or {}).get("Pid") or 0
        item = {
            "id": doc.get("Id", "")[:12],
            "name": doc.get("Name", "").lstrip("/"),
            "network_mode": (doc.get("HostConfig") or {}).get("NetworkMode", ""),
            "networks": {k: {"ip": v.get("IPAddress", ""), "prefix": v.get("IPPrefixLen", 0),
                             "gateway": v.get("Gateway", "")} for k, v in nets.items()},
            "eth0_mtu": None,
        }  # fmt: skip
        if pid:
            links = run_json(
                host, "nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", "eth0"
            )
            if links:
                item["eth0_mtu"] = links[0].get("mtu")
        found.append(item)
    return found


def docker_networks(host: dict[str, Any]) -> list[dict[str, Any]]:
    ids = run(host, "docker", "network", "ls", "-q")["out"].split()
    found = []
    for doc in (run_json(host, "docker", "network", "inspect", *ids) if ids else None) or []:
        configs = (doc.get("IPAM") or {}).get("Config") or []
        found.append({"name": doc.get("Name"), "driver": doc.get("Driver"),
                      "subnets": [c.get("Subnet") for c in configs if c.get("Subnet")],
                      "options": doc.get("Options") or {}})  # fmt: skip
    return found


def unit(host: dict[str, Any], name: str) -> dict[str, str]:
    props = "LoadState,ActiveState,SubState,Result,NRestarts,ActiveEnterTimestampMonotonic,MainPID"
    out = run(host, "systemctl", "show", name, "-p", props)["out"]
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


def sysctls() -> dict[str, str]:
    values = {"net.ipv4.ip_forward": (read("/proc/sys/net/ipv4/ip_forward") or "").strip()}
    base = "/proc/sys/net/ipv4/conf"
    for dev in sorted(os.listdir(base))[:300] if os.path.isdir(base) else []:
        values[f"net.ipv4.conf.{dev}.rp_filter"] = (read(f"{base}/{dev}/rp_filter") or "").strip()
    return values


def route_gets(host: dict[str, Any], params: dict[str, Any], links: list[dict[str, Any]],
               addrs: list[dict[str, Any]], subnet: str) -> list[dict[str, Any]]:  # fmt: skip
    """The kernel's own answers (read-only lookups): how each peer's PublicIP is reached, and
    whether a packet from a peer's subnet (or PublicIP) arriving where the backend delivers
    it passes the reverse-path check (strict rp_filter answers 'Invalid cross-device link')."""
    underlay = next((a["ifname"] for a in addrs for i in a.get("addr_info", [])
                     if i.get("local") == params.get("address")), "")  # fmt: skip
    names = {link.get("ifname") for link in links}
    backend, vni = params.get("backend"), params.get("vni") or 1
    overlay = {"vxlan": f"flannel.{vni}", "udp": "flannel0"}.get(backend, underlay)
    own = None
    if subnet:
        own = str(ipaddress.ip_interface(subnet).ip)
    asks: list[tuple[str, list[str]]] = []
    for peer in params.get("peers", [])[:64]:
        asks.append(("peer", [peer["public_ip"]]))
        if own and overlay in names and peer.get("subnet"):
            src = str(ipaddress.ip_network(peer["subnet"]).network_address + 1)
            asks.append(("rp-overlay", [own, "from", src, "iif", overlay]))
        if backend in ("vxlan", "udp") and underlay and params.get("address"):
            asks.append(
                ("rp-underlay", [params["address"], "from", peer["public_ip"], "iif", underlay])
            )
    found = []
    for kind, args in asks:
        got = run(host, "ip", "-j", "-4", "route", "get", *args)
        answer = None
        if got["rc"] == 0:
            try:
                answer = (json.loads(got["out"]) or [None])[0]
            except ValueError:
                answer = None
        found.append({"kind": kind, "args": args, "route": answer,
                      "error": got["err"].strip() if got["rc"] != 0 else ""})  # fmt: skip
    return found


def main(params: dict[str, Any]) -> dict[str, Any]:
    host = new_host()
    facts: dict[str, Any] = {"version": 1, "time": time.time(), "kernel": os.uname().release}
    facts["uptime"] = float((read("/proc/uptime") or "0").split()[0])
    facts["sysctl"] = sysctls()
    facts["iptables_save"] = run(host, "iptables-save", "-c")
    facts["ip6tables_save"] = run(host, "ip6tables-save", "-c")
    facts["nft"] = run(host, "nft", "-j", "list", "ruleset")
    state = run(host, "firewall-cmd", "--state")
    facts["firewalld"] = {"state": state}
    if state["rc"] == 0:
        # The default zone by itself: --list-all-zones does not mark it (firewalld 1.3).
        for key, arg in (("default", "--get-default-zone"),
                         ("active", "--get-active-zones"), ("zones", "--list-all-zones"),
                         ("policies", "--list-all-policies")):  # fmt: skip
            facts["firewalld"][key] = run(host, "firewall-cmd", arg)
    links = facts["links"] = run_json(host, "ip", "-j", "-d", "link", "show") or []
    addrs = facts["addrs"] = run_json(host, "ip", "-j", "-4", "addr", "show") or []
    facts["routes"] = run_json(host, "ip", "-j", "-4", "route", "show") or []
    facts["neigh"] = run_json(host, "ip", "-j", "-4", "neigh", "show") or []
    vxlans = [x["ifname"] for x in links
              if ((x.get("linkinfo") or {}).get("info_kind") == "vxlan")]  # fmt: skip
    facts["fdb"] = {dev: run_json(host, "bridge", "-j", "fdb", "show", "dev", dev) or []
                    for dev in vxlans}  # fmt: skip
    subnet_env = env_file(read(params.get("subnet_env", "")))
    facts["subnet_env"] = subnet_env
    facts["docker_opts"] = env_file(read(params.get("docker_opts", "")))
    facts["route_gets"] = route_gets(
        host, params, links, addrs, subnet_env.get("FLANNEL_SUBNET", "")
    )
    options = agent_options(params.get("agent_env", []))
    facts["agent_options"] = options
    facts["agent_unit"] = unit(host, "overlay-agent")
    port = int(params.get("healthz_port") or 8471)
    facts["readyz"] = http_get(port, "/readyz")
    facts["healthz"] = http_get(port, "/healthz")
    facts["docker_unit"] = docker = unit(host, "docker")
    pid = docker.get("MainPID", "0")
    cmdline = read(f"/proc/{pid}/cmdline") if pid not in ("", "0") else None
    facts["dockerd_args"] = [a for a in (cmdline or "").split("\0") if a]
    try:
        daemon = json.loads(read("/etc/docker/daemon.json") or "{}")
        keys = ("mtu", "bip", "bridge", "iptables", "ip-forward", "default-address-pools")
        facts["daemon_json"] = {k: daemon[k] for k in keys if k in daemon}
    except ValueError as exc:
        facts["daemon_json"] = {"error": f"/etc/docker/daemon.json: {exc}"}
    if docker.get("ActiveState") == "active":
        facts["docker_networks"] = docker_networks(host)
        facts["containers"] = containers(host, int(params.get("max_containers") or 5))
    facts["etcd"] = etcd_reach(options, host)
    certfile = options.get("etcd-certfile")
    pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
    facts["client_cert_pem"] = "\n".join(pem.findall(read(certfile) or "")) if certfile else ""
    facts["missing"] = host["missing"]
    facts["elapsed_s"] = round(time.monotonic() - host["start"], 3)
    return facts


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
