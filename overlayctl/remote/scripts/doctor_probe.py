"""Run on a host with `python3 -c` by `overlayctl doctor` (overlayctl/doctor/probes.py), on every
host at once: listen, send marked probes to the peers, and say what arrived where. Standard
library only, Python 3.9, read-only: nothing is left behind (no file, no rule, no process).

    python3 -c "$(cat doctor_probe.py)" PLAN_JSON

For WINDOW seconds, AF_PACKET sockets on the underlay device(s) and the overlay device count
every packet carrying this run's MARKER, per device, direction, probe kind and sender (the
sender's address travels in the payload, so no header needs to be trusted). After DELAY s
(every host listens by then) it sends to each peer: ICMP echoes to the PublicIP (kind "i"),
the backend's own probe (kind "e": a VXLAN frame to VtepMAC, a udp-backend datagram, or for
host-gw an echo to the peer's docker0 .1 through the host's routes) and Don't-Fragment echoes
at the size the overlay needs (kind "m"), bisected when they are lost. Counters (/proc/net/snmp,
the devices' statistics) are read before and after, the checksum offloads once, and where the
kernel offers it the skb:kfree_skb tracepoint is read from a private tracefs instance. Prints
one JSON document.

Payload of every probe: MARKER (8 bytes) | kind (1) | sender IPv4 (4) | seq (2) | padding.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo(marker: bytes, kind: str, sender: str, seq: int, *, size: int, ident: int) -> bytes:
    """An ICMP echo request (header + payload) whose IPv4 packet is SIZE bytes long."""
    body = marker + kind.encode() + socket.inet_aton(sender) + struct.pack("!H", seq & 0xFFFF)
    body += b"\xa5" * max(0, size - 28 - len(body))
    head = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    return head[:2] + struct.pack("!H", checksum(head + body)) + head[4:] + body


def ipv4(src: str, dst: str, icmp: bytes) -> bytes:
    """ICMP in an IPv4 header SRC -> DST, as a host would put it on the overlay."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + icmp


def vxlan(vni: int, dst_mac: str, src_mac: str, packet: bytes) -> bytes:
    """PACKET in an Ethernet frame DST_MAC <- SRC_MAC behind a VXLAN header with VNI."""
    macs = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return struct.pack("!II", 0x08000000, (vni & 0xFFFFFF) << 8) + macs + b"\x08\x00" + packet


def parse_packet(data: bytes, marker: bytes, ports: dict, depth: int = 0) -> dict | None:  # noqa: PLR0911
    """What a probe IPv4 packet DATA is ({kind, sender, seq, icmp, via[, error]}), or None.
    Looks inside VXLAN (ports["vxlan"]) and udp-backend (ports["udp"]) datagrams and inside
    ICMP errors quoting a probe (the hop that refused it and why)."""
    if len(data) < 20 or data[0] >> 4 != 4 or depth > 2:
        return None
    ihl = (data[0] & 0x0F) * 4
    end = min(len(data), struct.unpack("!H", data[2:4])[0])
    if ihl < 20 or end < ihl + 8:
        return None
    proto, body = data[9], data[ihl:end]
    if proto == 1:
        kind, code = body[0], body[1]
        if kind in (0, 8):
            tail = body[8:]
            if len(tail) < 15 or tail[:8] != marker:
                return None
            return {"kind": chr(tail[8]), "sender": socket.inet_ntoa(tail[9:13]),
                    "seq": struct.unpack("!H", tail[13:15])[0], "icmp": kind, "via": "",
                    "size": end}  # fmt: skip
        if kind in (3, 11, 12):
            inner = parse_packet(body[8:], marker, ports, depth + 1)
            if inner is not None:
                inner["error"] = [kind, code, struct.unpack("!H", body[6:8])[0]]
                inner["from"] = socket.inet_ntoa(data[12:16])
            return inner
        return None
    if proto != 17:
        return None
    dport, inner = struct.unpack("!H", body[2:4])[0], None
    if dport == ports.get("vxlan") and len(body) >= 8 + 8 + 14 and body[28:30] == b"\x08\x00":
        inner = parse_packet(body[30:], marker, ports, depth + 1)
        via = "vxlan"
    elif dport == ports.get("udp"):
        inner = parse_packet(body[8:], marker, ports, depth + 1)
        via = "udp"
    if inner is not None and not inner["via"]:
        inner["via"] = via
    return inner


def packet_socket(dev: str) -> socket.socket:
    """An AF_PACKET socket on DEV (network header first) seeing IPv4 ICMP and UDP, both ways:
    ETH_P_ALL, as sockets bound to one protocol never see what the host sends."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    prog = [(0x28, 0, 0, 0xFFFFF000), (0x15, 0, 3, 0x0800), (0x30, 0, 0, 9), (0x15, 2, 0, 1),
            (0x15, 1, 0, 17), (0x06, 0, 0, 0), (0x06, 0, 0, 0x40000)]  # fmt: skip
    code = b"".join(struct.pack("HBBI", *op) for op in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(buf)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((dev, 3))
    sock.setblocking(False)
    return sock


def capture(socks: dict, marker: bytes, ports: dict, deadline: float, seen: dict) -> None:
    """Count the probes on SOCKS (socket -> hop) until DEADLINE, at most 200000 packets."""
    budget = 200000
    directions = {4: "out", 3: "other"}
    while budget > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(list(socks), [], [], min(left, 0.05))
        for sock in ready:
            for _ in range(256):
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                budget -= 1
                hit = parse_packet(data, marker, ports) if addr[1] == 0x0800 else None
                if hit is None:
                    continue
                what = "error" if "error" in hit else ("request" if hit["icmp"] == 8 else "reply")
                key = (socks[sock], directions.get(addr[2], "in"), hit["kind"], hit["sender"], what)
                entry = seen.setdefault(key, {"count": 0, "max_size": 0, "via": hit["via"]})
                entry["count"] += 1
                entry["max_size"] = max(entry["max_size"], hit["size"])
                if "error" in hit:
                    entry["error"] = hit["error"] + [hit["from"]]


def counters(devs: list) -> dict:
    """Udp and Ip lines of /proc/net/snmp, and DEVS' drop and error counters."""
    out = {"snmp": {}, "dev": {}}
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f]
        for names, values in zip(lines[::2], lines[1::2]):
            if names[0] in ("Udp:", "Ip:") and names[0] == values[0]:
                out["snmp"][names[0][:-1]] = dict(zip(names[1:], map(int, values[1:])))
    except (OSError, ValueError):
        pass
    for dev in devs:
        stats = {}
        for name in ("rx_dropped", "rx_errors", "tx_dropped", "tx_errors", "rx_crc_errors"):
            try:
                with open(f"/sys/class/net/{dev}/statistics/{name}") as f:
                    stats[name] = int(f.read())
            except (OSError, ValueError):
                pass
        out["dev"][dev] = stats
    return out


def offloads(dev: str) -> dict:
    """DEV's checksum features from the kernel (SIOCETHTOOL: strings, then features)."""
    out = {"device": dev, "source": "ioctl", "features": {}, "error": ""}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:

            def call(payload: bytes) -> bytes:
                buf = ctypes.create_string_buffer(payload, len(payload))
                ifreq = dev.encode()[:15].ljust(16, b"\0") + struct.pack("P", ctypes.addressof(buf))
                fcntl.ioctl(sock.fileno(), 0x8946, ifreq.ljust(40, b"\0"))
                return buf.raw

            info = call(struct.pack("IIQ", 0x37, 0, 1 << 4) + b"\0" * 4)
            count = struct.unpack_from("I", info, 16)[0]
            raw = call(struct.pack("III", 0x1B, 4, count) + b"\0" * (32 * count))[12:]
            names = [raw[i * 32 : i * 32 + 32].split(b"\0")[0].decode() for i in range(count)]
            blocks = (count + 31) // 32
            feats = call(struct.pack("II", 0x3A, blocks) + b"\0" * (16 * blocks))[8:]
            for i, name in enumerate(names):
                if "checksum" in name:
                    active = struct.unpack_from("I", feats, (i // 32) * 16 + 8)[0]
                    out["features"][name] = bool(active >> (i % 32) & 1)
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        out.update(source="", error=f"SIOCETHTOOL on {dev}: {exc}")
    return out


def underlay_devices(address: str, peers: list) -> tuple:
    """The device holding ADDRESS, and each peer's route device (`ip route get`)."""
    own, routes = "", {}
    try:
        text = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, check=False,
                              text=True, timeout=3).stdout  # fmt: skip
        for line in text.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[3].split("/")[0] == address:
                own = parts[1].split("@")[0]
        for peer in peers:
            argv = ["ip", "-o", "route", "get", peer["address"]]
            text = subprocess.run(argv, capture_output=True, text=True, timeout=3,
                                  check=False).stdout  # fmt: skip
            found = re.search(r"\bdev (\S+)", text)
            routes[peer["name"]] = found.group(1) if found else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return own, routes


def trace_start(tag: str) -> tuple:
    """A private tracefs instance with skb:kfree_skb on (noise reasons filtered out in the
    kernel), mounting tracefs if it is not: (state, "") or (None, why not)."""
    release = os.uname().release
    found = re.match(r"(\d+)\.(\d+)", release)
    if not found or (int(found.group(1)), int(found.group(2))) < (5, 17):
        return None, f"kernel {release} is older than 5.17 (no drop reasons)"
    root, mounted = "", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if " - tracefs " in line and not root:
                root = fields[4]
    libc = ctypes.CDLL(None, use_errno=True)
    if not root:
        root = "/sys/kernel/tracing"
        if libc.mount(b"nodev", root.encode(), b"tracefs", 0, None) != 0:
            why = os.strerror(ctypes.get_errno())
            return None, f"tracefs is not mounted and cannot be mounted here ({why})"
        mounted = True
    state = {"root": root, "mounted": mounted, "dir": "", "libc": libc}
    event = root + "/events/skb/kfree_skb"
    try:
        with open(event + "/format") as f:
            symbols = dict((n, int(v)) for v, n in re.findall(r'\{ (\d+), "(\w+)" \}', f.read()))
        noise = [v for n, v in symbols.items() if n in ("NOT_SPECIFIED", "SOCKET_CLOSE",
                 "QUEUE_PURGE") or n.startswith(("TCP_", "UNIX_", "IPV6"))]  # fmt: skip
        where = f"{root}/instances/overlayctl-{tag}"
        os.mkdir(where)
        state["dir"] = where
        with open(where + "/events/skb/kfree_skb/filter", "w") as f:
            f.write(" && ".join(["protocol == 2048"] + [f"reason != {v}" for v in noise]))
        with open(where + "/events/skb/kfree_skb/enable", "w") as f:
            f.write("1")
    except OSError as exc:
        trace_stop(state)
        return None, f"tracefs: cannot trace skb:kfree_skb here ({exc})"
    return state, ""


def trace_stop(state: dict) -> tuple:
    """Disable the event, read the instance's trace (400 lines at most), remove the instance
    and unmount tracefs if we mounted it: (lines, lines left out)."""
    lines, more = [], 0
    where = state["dir"]
    if where:
        try:
            with open(where + "/events/skb/kfree_skb/enable", "w") as f:
                f.write("0")
            with open(where + "/trace") as f:
                for line in f:
                    if line.startswith("#"):
                        continue
                    if len(lines) < 400:
                        lines.append(line.rstrip("\n"))
                    else:
                        more += 1
        except OSError:
            pass
        for _ in range(20):
            try:
                os.rmdir(where)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.05)
    if state["mounted"]:
        state["libc"].umount2(state["root"].encode(), 0)
    return lines, more


def pinger() -> socket.socket:
    """A raw ICMP socket whose echoes carry Don't-Fragment and ignore the cached path MTU."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.IPPROTO_IP, 10, 3)  # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: DF set
    sock.setblocking(False)
    return sock


def replies(sock: socket.socket, marker: bytes, ports: dict, own: str, *, until: float,
            want: set, got: dict, errors: list) -> None:  # fmt: skip
    """Read echo replies to our probes (and ICMP errors about them) until UNTIL or every key
    of WANT ((kind, peer address, seq)) is in GOT (key -> RTT-less arrival time)."""
    for _ in range(100000):
        left = until - time.monotonic()
        if left <= 0 or want <= set(got):
            return
        select.select([sock], [], [], min(left, 0.05))
        for _ in range(256):
            try:
                data, (src, _) = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            hit = parse_packet(data, marker, ports)
            if hit is None or hit["sender"] != own:
                continue
            if "error" in hit and len(errors) < 50:
                errors.append({"from": hit["from"], "kind": hit["kind"], "seq": hit["seq"],
                               "type": hit["error"][0], "code": hit["error"][1],
                               "mtu": hit["error"][2]})  # fmt: skip
            elif hit["icmp"] == 0:
                got.setdefault((hit["kind"], src, hit["seq"]), time.monotonic())


def send_probes(plan: dict, marker: bytes, ports: dict, deadline: float, out: dict) -> None:
    """Every probe of PLAN to every peer, the replies, and the path MTU where DF probes die."""
    own, ident, sent = plan["address"], os.getpid() & 0xFFFF, {}
    icmp, encap = pinger(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wanted = int(plan["overlay_mtu"] or out["underlay_mtu"] - plan["overhead"]) + plan["overhead"]
    got, errors = {}, []
    results = out["peers"]

    def send(kind: str, peer: dict, seq: int, size: int) -> str:
        dst = peer["overlay_ip"] if kind == "e" else peer["address"]
        sent[(kind, dst, seq)] = time.monotonic()  # a probe refused here counts as lost
        try:
            if kind == "e" and plan["backend"] in ("vxlan", "udp"):
                inner = ipv4(plan["own_overlay_ip"], peer["overlay_ip"],
                             echo(marker, kind, own, seq, size=84, ident=ident))  # fmt: skip
                if plan["backend"] == "vxlan":
                    inner = vxlan(plan["vni"], peer["vtep_mac"], plan["own_vtep_mac"], inner)
                encap.sendto(inner, (peer["address"], plan["port"]))
            else:
                icmp.sendto(echo(marker, kind, own, seq, size=size, ident=ident), (dst, 0))
        except OSError as exc:
            return os.strerror(exc.errno) if exc.errno else str(exc)
        return ""

    for peer in plan["peers"]:
        res = results[peer["name"]] = {"icmp": {"sent": 0, "error": ""}, "encap": {"sent": 0,
                                       "error": ""}, "mtu": {"wanted": wanted}}  # fmt: skip
        for seq in (1, 2, 3):
            res["icmp"]["error"] = send("i", peer, seq, 84) or res["icmp"]["error"]
            res["icmp"]["sent"] += not res["icmp"]["error"]
        if not peer["overlay_ip"] or (plan["backend"] == "vxlan" and not peer["vtep_mac"]):
            res["encap"]["error"] = f"no lease (or no VtepMAC) for {peer['name']} in etcd"
        elif plan["backend"] in ("vxlan", "udp") and not plan["own_overlay_ip"]:
            # No inner source without an own lease: the agent and lease checks report that.
            res["encap"]["error"] = f"no lease for {plan['host']} itself in etcd"
        else:
            for seq in (1, 2, 3):
                res["encap"]["error"] = send("e", peer, seq, 84) or res["encap"]["error"]
                res["encap"]["sent"] += not res["encap"]["error"]
        res["mtu"]["error"] = send("m", peer, wanted, wanted) or send("m", peer, wanted, wanted)
    keys = set(sent)
    replies(
        icmp,
        marker,
        ports,
        own,
        until=min(deadline, time.monotonic() + 0.7),
        want=keys,
        got=got,
        errors=errors,
    )
    lost = []
    for peer in plan["peers"]:
        res, dst = results[peer["name"]], peer["address"]
        for kind, name in (("i", "icmp"), ("e", "encap")):
            target = peer.get("overlay_ip") if kind == "e" else dst
            rtts = [round((got[k] - sent[k]) * 1000, 3) for k in sent
                    if k[0] == kind and k[1] == target and k in got]  # fmt: skip
            res[name]["replies"] = len(rtts)
            res[name]["rtt_ms"] = rtts
        res["mtu"]["ok"] = ("m", dst, wanted) in got
        if not res["mtu"]["ok"] and res["icmp"]["replies"]:
            lost.append(peer)

    def wait(keys: set, until: float) -> None:
        replies(icmp, marker, ports, own, until=until, want=keys, got=got, errors=errors)

    bisect(lost, wanted, send, wait, deadline=deadline, sent=sent, got=got, results=results)
    out["icmp_errors"] = errors
    icmp.close()
    encap.close()


def bisect(lost: list, wanted: int, send, wait, *, deadline: float, sent: dict, got: dict,
           results: dict) -> None:  # fmt: skip
    """The largest DF echo that comes back, per peer in LOST: rounds of 8 sizes in parallel,
    0.25 s each, until exact or out of time (then a range)."""
    bounds = {p["name"]: [84, wanted] for p in lost}  # 84-byte echoes came back
    for _ in range(6):
        if time.monotonic() + 0.3 > deadline:
            break
        keys = set()
        for peer in lost:
            lo, hi = bounds[peer["name"]]
            for size in sorted({lo + (hi - lo) * k // 9 for k in range(1, 9)} - {lo, hi}):
                if not send("m", peer, size, size):
                    keys.add(("m", peer["address"], size))
        if keys:
            wait(keys, time.monotonic() + 0.25)
        for peer in lost:
            b, dst = bounds[peer["name"]], peer["address"]
            tried = [k[2] for k in sent if k[0] == "m" and k[1] == dst and b[0] < k[2] < b[1]]
            b[0] = max([s for s in tried if ("m", dst, s) in got] + [b[0]])
            b[1] = min([s for s in tried if s > b[0] and ("m", dst, s) not in got] + [b[1]])
        if all(hi - lo <= 1 for lo, hi in bounds.values()):
            break
    for peer in lost:
        lo, hi = bounds[peer["name"]]
        results[peer["name"]]["mtu"].update(path_mtu=lo, path_mtu_below=hi)


def main(plan: dict) -> dict:
    start = time.monotonic()
    window, marker = float(plan["window"]), bytes.fromhex(plan["marker"])
    deadline = start + window
    own_dev, routes = underlay_devices(plan["address"], plan["peers"])
    nics = sorted({d for d in [own_dev, *routes.values()] if d})
    overlay = plan.get("overlay_dev") or ""
    has_overlay = bool(overlay) and os.path.exists(f"/sys/class/net/{overlay}")
    out = {"host": plan["host"], "marker": plan["marker"], "underlay_dev": own_dev,
           "route_devs": routes, "nics": nics, "overlay_dev": overlay if has_overlay else "",
           "underlay_mtu": 0, "peers": {}, "seen": [], "errors": [], "trace": {}}  # fmt: skip
    try:
        with open(f"/sys/class/net/{own_dev}/mtu") as f:
            out["underlay_mtu"] = int(f.read())
    except (OSError, ValueError):
        out["errors"].append(f"no device holds {plan['address']}")
    with open("/proc/sys/kernel/random/boot_id") as f:
        out["boot_id"] = f.read().strip()
    devs = nics + ([overlay] if has_overlay else [])
    out["counters_before"] = counters(devs)
    out["offloads"] = offloads(own_dev) if own_dev else {}
    socks, seen = {}, {}
    for dev in devs:
        try:
            socks[packet_socket(dev)] = "overlay" if dev == overlay else "nic"
        except OSError as exc:
            out["errors"].append(f"cannot listen on {dev}: {exc}")
    tag = plan["marker"][:16] + "-" + socket.inet_aton(plan["address"]).hex()
    state, why = (None, "not asked") if not plan.get("trace", True) else trace_start(tag)
    ports = {"vxlan": plan["port"] if plan["backend"] == "vxlan" else None,
             "udp": plan["port"] if plan["backend"] == "udp" else None}  # fmt: skip
    listener = threading.Thread(target=capture, args=(socks, marker, ports, deadline, seen),
                                daemon=True)  # fmt: skip
    listener.start()
    try:
        time.sleep(max(0.0, start + float(plan["delay"]) - time.monotonic()))
        send_probes(plan, marker, ports, deadline - 0.2, out)
    except OSError as exc:
        out["errors"].append(f"probes: {exc}")
    finally:
        listener.join(window + 1)
        lines, more = trace_stop(state) if state else ([], 0)
        out["trace"] = {"available": state is not None, "why": why, "lines": lines, "more": more,
                        "kernel": os.uname().release}  # fmt: skip
        for sock in socks:
            sock.close()
    out["counters_after"] = counters(devs)
    out["seen"] = [dict(zip(("hop", "dir", "kind", "sender", "what"), k), **v)
                   for k, v in sorted(seen.items())]  # fmt: skip
    out["elapsed"] = round(time.monotonic() - start, 3)
    return out


if __name__ == "__main__":
    try:
        doc = main(json.loads(sys.argv[1]))
    except Exception as exc:  # one JSON document whatever happens
        doc = {"fatal": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(doc))
