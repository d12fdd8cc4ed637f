#!/usr/bin/python3
"""A stand-in for flanneld 0.7.1 on the udp backend, installed as /usr/bin/flanneld on full lab
hosts by tests/e2e/handbuilt.py: no flanneld binary of that era is packaged here, and
`overlayctl adopt` must be tested against a hand-built cluster that really passes traffic.

Standard library only (the host's python3); addresses and routes through iproute2, as an
operator would see them. What it does is what 0.7 does (flannel's `subnet/etcdv2`,
`backend/udp`, `pkg/ip/tun.go`), nothing more:

- reads `<prefix>/config` over etcd's v2 HTTP API (no `Backend`: udp), retrying until it exists;
- reuses the v2 lease whose PublicIP is its own, else creates one in a random free subnet
  (one of the first 100, create-if-absent), value `{"PublicIP":"..."}` (udp leases carry no
  BackendType), TTL 24 h, renewed when less than `--subnet-lease-renew-margin` minutes are left;
  a lease of its own that vanishes is "revoked": it exits 1 (systemd restarts it);
- writes /run/flannel/subnet.env (flannel's exact text) before READY=1 (sd_notify);
- opens a NON-persistent TUN `flannel%d` (the first free name: `flannel1` when a `flannel0` is
  left), `<subnet>.0/<Network prefix>`, MTU = the interface's - 28, and the Network's route; it
  and the route vanish when the process exits;
- forwards raw IPv4 packets over UDP (8285, bound to the public IP), one packet per datagram,
  to the PublicIP of the destination's v2 lease, and learns lease changes by watching v2
  (`?wait=true&recursive=true`, each wait bounded by WATCH_TIMEOUT, then a fresh list).

Flags as flanneld's (Go style, `-name=value` or `--name=value`); unknown flags and stray words
are logged and skipped, so the runbook's `--etcd endpoints=...` slip on node1 does not stop it.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SUBNET_TTL = 24 * 3600  # flannel's subnetTTL
WATCH_TIMEOUT = 30.0  # seconds a v2 wait may block before the lease list is read again
REQUEST_TIMEOUT = 5.0
ENCAP_OVERHEAD = 28  # IPv4 + UDP
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
DEFAULTS = {
    "etcd-endpoints": "http://127.0.0.1:2379,http://127.0.0.1:4001",
    "etcd-prefix": "/coreos.com/network",
    "iface": "",
    "public-ip": "",
    "subnet-file": "/run/flannel/subnet.env",
    "ip-masq": "false",
    "subnet-lease-renew-margin": "60",
}
BOOLEANS = {"ip-masq"}


def log(message: str) -> None:
    print(f"flanneld: {message}", file=sys.stderr, flush=True)


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Go-style flags into DEFAULTS' keys; `-name value` for non-boolean flags."""
    flags, words = dict(DEFAULTS), iter(argv)
    for word in words:
        if not word.startswith("-") or word in ("-", "--"):
            log(f"ignoring stray argument {word!r}")
            continue
        name, has_value, value = word.lstrip("-").partition("=")
        if name not in DEFAULTS:
            log(f"ignoring unknown flag {word!r}")
            continue
        if not has_value:
            value = "true" if name in BOOLEANS else next(words, "")
        flags[name] = value
    return flags


class EtcdError(Exception):
    """No endpoint answered, or one answered with something that is not etcd's v2 JSON."""


class V2:
    """etcd's v2 keys API over plain HTTP, every endpoint tried in turn."""

    def __init__(self, endpoints: str, prefix: str) -> None:
        self.endpoints = [e.strip().rstrip("/") for e in endpoints.split(",") if e.strip()]
        self.prefix = "/" + prefix.strip("/")

    def call(
        self, method: str, key: str, query: dict[str, str] | None = None,
        form: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[int, int, dict]:  # fmt: skip
        """(HTTP status, X-Etcd-Index, JSON body) from the first endpoint that answers."""
        path = "/v2/keys" + urllib.parse.quote(self.prefix + key)
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        failures = []
        for endpoint in self.endpoints:
            url = endpoint + path + suffix  # http(s) endpoints from flanneld's own flags
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
            if data is not None:
                request.add_header("Content-Type", "application/x-www-form-urlencoded")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                    return answer.status, _index(answer.headers), json.loads(answer.read())
            except TimeoutError:
                if query and query.get("wait") == "true":
                    return 408, 0, {}  # a wait that saw no change: the caller lists again
                failures.append(f"{endpoint}: timed out")
            except urllib.error.HTTPError as exc:
                body = exc.read()
                try:
                    return exc.code, _index(exc.headers), json.loads(body)
                except ValueError:  # not etcd's JSON (e.g. v2 off: a plain 404 page)
                    failures.append(f"{endpoint}: HTTP {exc.code}")
            # refused, timed out, cut (a member restarting mid-answer: IncompleteRead). flanneld
            # 0.7 logs and retries any of these; it never exits on them.
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{endpoint}: {exc}")
        raise EtcdError("; ".join(failures) or "no endpoints")


def _index(headers) -> int:
    return int(headers.get("X-Etcd-Index") or 0)


def subnet_of(key: str) -> ipaddress.IPv4Network:
    """`.../subnets/172.21.31.0-24` -> 172.21.31.0/24."""
    return ipaddress.IPv4Network(key.rsplit("/", 1)[-1].replace("-", "/"))


def lease_key(subnet: ipaddress.IPv4Network) -> str:
    return f"/subnets/{subnet.network_address}-{subnet.prefixlen}"


class Leases:
    """The network config and this host's lease in v2, and everyone's leases."""

    def __init__(self, etcd: V2, public_ip: str, renew_margin: int) -> None:
        self.etcd, self.public_ip, self.margin = etcd, public_ip, renew_margin * 60
        self.value = json.dumps({"PublicIP": public_ip}, separators=(",", ":"))

    def config(self) -> dict:
        """`<prefix>/config`, waited for as flanneld does (once a second)."""
        while True:
            try:
                status, _, body = self.etcd.call("GET", "/config")
                if status == 200:
                    return json.loads(body["node"]["value"])
                log(f"no network config at {self.etcd.prefix}/config yet ({body.get('message')})")
            except (EtcdError, ValueError, KeyError) as exc:
                log(f"cannot read the network config: {exc}")
            time.sleep(1)

    def list(self) -> tuple[int, dict[ipaddress.IPv4Network, tuple[str, int | None, str]]]:
        """(etcd index, subnet -> (PublicIP, TTL left or None, raw value))."""
        status, index, body = self.etcd.call("GET", "/subnets", {"recursive": "true"})
        if status == 404 and body.get("errorCode") == 100:
            return index, {}
        if status != 200:
            raise EtcdError(f"listing leases: HTTP {status}: {body.get('message')}")
        found = {}
        for node in body["node"].get("nodes", []):
            try:
                attrs = json.loads(node["value"])
                found[subnet_of(node["key"])] = (attrs["PublicIP"], node.get("ttl"), node["value"])
            except (KeyError, ValueError):
                log(f"ignoring a malformed lease {node.get('key')}")
        return index, found

    def acquire(self, config: dict) -> ipaddress.IPv4Network:
        """This host's lease: its own PublicIP's if one exists (TTL reset), else a new one."""
        for _ in range(100):
            try:
                _, leases = self.list()
                for subnet, (public_ip, _, value) in leases.items():
                    if public_ip == self.public_ip:
                        log(f"found lease ({subnet}) for current IP ({public_ip}), reusing")
                        self._set(subnet, {"prevValue": value})
                        return subnet
                free = free_subnets(config, set(leases))
                subnet = random.choice(free)  # noqa: S311 - spreading subnets, as flannel does
                status, _, body = self.etcd.call(
                    "PUT", lease_key(subnet), form=self._form({"prevExist": "false"})
                )
                if status in (200, 201):
                    log(f"allocated lease ({subnet}) to current node ({self.public_ip})")
                    return subnet
                log(f"lease {subnet} taken meanwhile ({body.get('message')}), trying again")
            except (EtcdError, IndexError) as exc:
                log(f"cannot acquire a lease: {exc}")
            time.sleep(1)
        raise SystemExit("flanneld: no lease after 100 attempts")

    def renew_if_due(self, subnet: ipaddress.IPv4Network, leases: dict) -> None:
        """Renew the lease when less than the margin is left; exit when it is gone."""
        mine = leases.get(subnet)
        if mine is None or mine[0] != self.public_ip:
            log(f"lease {subnet} has been revoked")
            os._exit(1)
        if mine[1] is not None and mine[1] < self.margin:
            self._set(subnet, {"prevValue": mine[2]})
            log(f"lease {subnet} renewed for {SUBNET_TTL} s")

    def _set(self, subnet: ipaddress.IPv4Network, condition: dict[str, str]) -> None:
        status, _, body = self.etcd.call("PUT", lease_key(subnet), form=self._form(condition))
        if status not in (200, 201):
            raise EtcdError(f"renewing {subnet}: HTTP {status}: {body.get('message')}")

    def _form(self, extra: dict[str, str]) -> dict[str, str]:
        return {"value": self.value, "ttl": str(SUBNET_TTL), **extra}


def free_subnets(config: dict, taken: set[ipaddress.IPv4Network]) -> list:
    """The first 100 free subnets between SubnetMin and SubnetMax (flannel's defaults)."""
    network = ipaddress.IPv4Network(config["Network"])
    length = int(config.get("SubnetLen", 24))
    size = 1 << (32 - length)
    low = int(ipaddress.IPv4Address(config.get("SubnetMin", network.network_address + size)))
    high = int(ipaddress.IPv4Address(config.get("SubnetMax", network.broadcast_address + 1 - size)))
    found = []
    for start in range(low, high + 1, size):
        subnet = ipaddress.IPv4Network((start, length))
        if subnet not in taken:
            found.append(subnet)
            if len(found) == 100:
                break
    return found


def interface(flags: dict[str, str]) -> tuple[str, str, int]:
    """(name, IPv4 address, MTU) of `--iface` (a name or an address; none: the default
    route's), or `--public-ip` as the address."""
    want = flags["iface"]
    if not want:
        route = _ip("-4", "-o", "route", "show", "default").split()
        want = route[route.index("dev") + 1]
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        name, address = fields[1], fields[3].split("/")[0]
        if want in (name, address):
            with open(f"/sys/class/net/{name}/mtu", encoding="ascii") as fh:
                mtu = int(fh.read())
            return name, flags["public-ip"] or address, mtu
    raise SystemExit(f"flanneld: no interface {want!r} with an IPv4 address")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def open_tun(subnet: ipaddress.IPv4Network, network: ipaddress.IPv4Network, mtu: int):
    """A non-persistent TUN `flannel%d` configured as flanneld's udp backend does."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    answer = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"flannel%d", IFF_TUN | IFF_NO_PI))
    name = answer[:16].rstrip(b"\0").decode()
    address = f"{subnet.network_address}/{network.prefixlen}"
    for argv in (["ip", "addr", "add", address, "dev", name],
                 ["ip", "link", "set", "dev", name, "mtu", str(mtu), "up"]):  # fmt: skip
        subprocess.run(argv, check=True)
    # Explicitly, as flanneld does (docker's routes may keep the kernel from adding it).
    subprocess.run(["ip", "route", "add", str(network), "dev", name], capture_output=True,
                   check=False)  # fmt: skip
    log(f"{name}: {address}, mtu {mtu}")
    return fd, name


def write_subnet_file(path: str, network, subnet, mtu: int, ipmasq: bool) -> None:
    gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
    text = (f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={gateway}\nFLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={str(ipmasq).lower()}\n")  # fmt: skip
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def sd_notify(message: str) -> None:
    where = os.environ.get("NOTIFY_SOCKET", "")
    if not where:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect("\0" + where[1:] if where.startswith("@") else where)
        sock.sendall(message.encode())


class Forwarder:
    """TUN <-> UDP, one raw IPv4 packet per datagram (flannel's udp wire format)."""

    def __init__(self, tun: int, sock: socket.socket, subnet_len: int, port: int) -> None:
        self.tun, self.sock, self.port = tun, sock, port
        self.mask = (0xFFFFFFFF << (32 - subnet_len)) & 0xFFFFFFFF
        self.routes: dict[int, str] = {}  # subnet as int -> PublicIP; replaced whole

    def start(self) -> None:
        for target in (self._tun_to_udp, self._udp_to_tun):
            threading.Thread(target=target, daemon=True).start()

    def _tun_to_udp(self) -> None:
        while True:
            packet = os.read(self.tun, 65536)
            if len(packet) < 20 or packet[0] >> 4 != 4:
                continue
            hop = self.routes.get(int.from_bytes(packet[16:20], "big") & self.mask)
            if hop is not None:
                with contextlib.suppress(OSError):  # a lost packet, as on the wire
                    self.sock.sendto(packet, (hop, self.port))

    def _udp_to_tun(self) -> None:
        while True:
            packet = self.sock.recv(65536)
            if len(packet) >= 20 and packet[0] >> 4 == 4:
                with contextlib.suppress(OSError):
                    os.write(self.tun, packet)


def watch(leases: Leases, own, forwarder: Forwarder) -> None:
    """Forever: list the leases (routes, renewal), then wait for a change, bounded."""
    while True:
        try:
            index, found = leases.list()
            leases.renew_if_due(own, found)
            routes = {int(s.network_address): ip for s, (ip, _, _) in found.items() if s != own}
            if routes != forwarder.routes:
                log(f"peers: {sorted(str(s) for s in found if s != own)}")
                forwarder.routes = routes
            query = {"wait": "true", "recursive": "true", "waitIndex": str(index + 1)}
            leases.etcd.call("GET", "/subnets", query, timeout=WATCH_TIMEOUT)
        except (EtcdError, KeyError, ValueError) as exc:
            log(f"watching leases: {exc}")
            time.sleep(1)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    flags = parse_flags(argv)
    iface, public_ip, iface_mtu = interface(flags)
    etcd = V2(flags["etcd-endpoints"], flags["etcd-prefix"])
    leases = Leases(etcd, public_ip, int(flags["subnet-lease-renew-margin"]))
    config = leases.config()
    backend = config.get("Backend", {}).get("Type", "udp")
    if backend != "udp":
        raise SystemExit(f"flanneld (test stand-in): backend {backend!r} not supported, udp only")
    network = ipaddress.IPv4Network(config["Network"])
    log(f"using interface {iface} with public IP {public_ip}; network {network}")
    own = leases.acquire(config)
    mtu = iface_mtu - ENCAP_OVERHEAD
    tun, _ = open_tun(own, network, mtu)
    port = int(config.get("Backend", {}).get("Port", 8285))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((public_ip, port))
    forwarder = Forwarder(tun, sock, own.prefixlen, port)
    forwarder.start()
    ipmasq = flags["ip-masq"].lower() in ("true", "1", "t")
    write_subnet_file(flags["subnet-file"], network, own, mtu, ipmasq)
    sd_notify("READY=1")
    watch(leases, own, forwarder)


if __name__ == "__main__":
    main(sys.argv[1:])
