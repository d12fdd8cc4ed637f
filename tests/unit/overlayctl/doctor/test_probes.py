"""doctor's probes, the pure parts: the plan per host, the reading of the script's answer, the
packet parser the script counts with and the tracefs line parser (both fuzzed: whatever
arrives on a wire or in a trace never raises), and the checksum and path-MTU checks on made-up
reports (the integration test runs the rest for real)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayctl.doctor.checks import checksum, mtu_path
from overlayctl.doctor.context import Context, DataPlane
from overlayctl.doctor.facts import HostFacts
from overlayctl.doctor.probes import (
    PathMtu,
    PeerResult,
    ProbeReport,
    Seen,
    Sent,
    parse_report,
    plan_probes,
    probe_host,
)
from overlayctl.doctor.trace import parse_trace
from overlayctl.errors import OverlayctlError
from overlayctl.etcd.cluster import LeaseInfo
from overlayctl.inventory import parse_inventory
from overlayctl.remote.scripts import doctor_probe as script
from overlayctl.remote.ssh import RunResult

MARKER = bytes.fromhex("00112233445566ff")
PORTS = {"vxlan": 8472, "udp": 8285}


def context(tmp_path: Path, backend: str = "vxlan") -> Context:
    doc = {"cluster": {"name": "t", "network": "10.5.0.0/16", "os": "debian", "backend": backend},
           "hosts": [{"name": f"n{i}", "address": f"10.0.0.{i}", "roles": ["etcd", "node"]}
                     for i in (1, 2, 3)]}  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    leases = [LeaseInfo(f"10.5.{i}.0/24", f"10.0.0.{i}", backend, 60, f"n{i}",
                        vtep_mac=f"02:00:00:00:00:0{i}") for i in (1, 2)]  # fmt: skip
    plane = DataPlane(backend, "10.5.0.0/16", 24, {"vxlan": 8472, "udp": 8285}.get(backend),
                      1 if backend == "vxlan" else None)  # fmt: skip
    return Context(inv=inv, plane=plane, hosts=["n1", "n2", "n3"],
                   pairs=[("n1", "n2"), ("n2", "n1"), ("n1", "n3")], leases=leases)  # fmt: skip


def test_plans_name_each_peer_its_lease_address_and_the_overlay_mtu(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.facts = {"n1": HostFacts("n1", subnet_env={"FLANNEL_MTU": "1400"})}
    plans = plan_probes(ctx, marker="ab" * 8)
    assert set(plans) == {"n1", "n2", "n3"}  # n3 sends nothing but listens
    n1 = plans["n1"]
    assert [(p.name, p.address, p.overlay_ip, p.vtep_mac) for p in n1.peers] == [
        ("n2", "10.0.0.2", "10.5.2.0", "02:00:00:00:00:02"),
        ("n3", "10.0.0.3", "", ""),  # no lease: nothing to aim the tunnel probe at
    ]
    assert (n1.overlay_dev, n1.own_overlay_ip, n1.overlay_mtu, n1.overhead) == (
        "flannel.1", "10.5.1.0", 1400, 50)  # fmt: skip
    assert plans["n2"].overlay_mtu is None and plans["n3"].peers == ()
    assert len({p.marker for p in plans.values()}) == 1
    gw = plan_probes(context(tmp_path, "host-gw"))["n1"]
    assert gw.peers[0].overlay_ip == "10.5.2.1" and gw.overhead == 0 and gw.overlay_dev == ""
    assert plan_probes(context(tmp_path, "udp"))["n1"].overlay_dev == "flannel0"


def test_a_bad_or_absent_answer_is_an_error_never_an_exception() -> None:
    assert "no output" in parse_report("n1", "").error
    assert parse_report("n1", "[1, 2]").error
    assert parse_report("n1", '{"peers": {}}').error  # no "seen"
    assert "PermissionError" in parse_report("n1", '{"fatal": "PermissionError: x"}').error

    class Remote:
        def __init__(self, result: RunResult | Exception) -> None:
            self.result = result

        def script(self, *args: object, **kw: object) -> RunResult:
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

    plan = plan_probes(context(Path("/nonexistent")), marker="00" * 8)["n1"]
    lost = probe_host(Remote(OverlayctlError("n1: SSH connection lost")), plan)
    assert lost.error == "n1: SSH connection lost"
    died = probe_host(Remote(RunResult(127, "", "sh: python3: not found\n")), plan)
    assert died.error == "the probe exited 127: sh: python3: not found"


def udp(dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload


def outer(src: str, dst: str, proto: int, body: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return head + body


def test_the_parser_finds_the_marker_at_every_depth() -> None:
    req = script.ipv4("10.5.1.0", "10.5.2.0", script.echo(MARKER, "e", "10.0.0.1", 7, size=84,
                                                          ident=1))  # fmt: skip
    hit = script.parse_packet(req, MARKER, PORTS)
    assert (hit["kind"], hit["sender"], hit["seq"], hit["icmp"], hit["size"]) == (
        "e", "10.0.0.1", 7, 8, 84)  # fmt: skip
    frame = script.vxlan(1, "02:00:00:00:00:02", "02:00:00:00:00:01", req)
    wrapped = outer("10.0.0.1", "10.0.0.2", 17, udp(8472, frame))
    assert script.parse_packet(wrapped, MARKER, PORTS)["via"] == "vxlan"
    assert script.parse_packet(outer("10.0.0.1", "10.0.0.2", 17, udp(8285, req)), MARKER,
                               PORTS)["via"] == "udp"  # fmt: skip
    assert script.parse_packet(wrapped, MARKER, {}) is None  # another port: not ours
    assert script.parse_packet(req, bytes(8), PORTS) is None  # another run's marker
    # A router's "fragmentation needed, MTU 1400" quoting our DF probe.
    big = script.ipv4("10.0.0.1", "10.0.0.2", script.echo(MARKER, "m", "10.0.0.1", 1500,
                                                          size=1500, ident=1))  # fmt: skip
    error = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + big[:576]
    hit = script.parse_packet(outer("10.0.0.254", "10.0.0.1", 1, error), MARKER, PORTS)
    assert (hit["kind"], hit["error"], hit["from"]) == ("m", [3, 4, 1400], "10.0.0.254")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2))
def test_the_packet_parser_never_raises_on_any_bytes(data: bytes, depth: int) -> None:
    hit = script.parse_packet(data, MARKER, PORTS, depth)
    assert hit is None or set(hit) >= {"kind", "sender", "seq", "icmp", "via"}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 100))
def test_a_corrupted_or_cut_probe_never_raises(cut: int, flip: int) -> None:
    packet = bytearray(outer("10.0.0.1", "10.0.0.2", 17, udp(8472, script.vxlan(
        1, "02:00:00:00:00:02", "02:00:00:00:00:01", script.ipv4("10.5.1.0", "10.5.2.0",
        script.echo(MARKER, "e", "10.0.0.1", 1, size=200, ident=1))))))  # fmt: skip
    packet[flip % len(packet)] ^= 0xFF
    script.parse_packet(bytes(packet[:cut]), MARKER, PORTS)


LINE = ("  <idle>-0  [001] ..s1.  602.480000: kfree_skb: skbaddr=0000000049b13593 rx_sk=0000000000"
        "000000 protocol=2048 location={} reason: {}")  # fmt: skip


def test_trace_lines_are_counted_per_reason_and_place_noise_left_out() -> None:
    lines = ["# tracer: nop", LINE.format("nf_hook_slow+0x9f/0xc0", "NETFILTER_DROP"),
             LINE.format("nf_hook_slow+0x9f/0xc0", "NETFILTER_DROP"),
             LINE.format("__udp4_lib_rcv+0x1/0x2", "UDP_CSUM"),
             LINE.format("ping_rcv+0xb3/0xe0", "NO_SOCKET"),  # our own raw socket's replies
             # 5.17: no rx_sk, the location as an address
             "ksoftirqd/0-9 [000] 1.0: kfree_skb: skbaddr=00000000 protocol=2048 "
             "location=00000000a1b2c3d4 reason: VXLAN_VNI_NOT_FOUND",
             "torn kfree_skb: protoc"]  # fmt: skip
    assert [(d.reason, d.location, d.count) for d in parse_trace(lines)] == [
        ("NETFILTER_DROP", "nf_hook_slow", 2), ("UDP_CSUM", "__udp4_lib_rcv", 1),
        ("VXLAN_VNI_NOT_FOUND", "00000000a1b2c3d4", 1)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
def test_the_trace_parser_never_raises(lines: list[str]) -> None:
    assert all(d.count > 0 for d in parse_trace(lines))


def report(host: str, **kw: object) -> ProbeReport:
    return ProbeReport(host, underlay_dev="eth0", underlay_mtu=1500, **kw)  # type: ignore[arg-type]


def test_checksum_errors_with_a_peers_probes_undelivered_name_the_senders_offload(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    ctx.pairs = [("n1", "n2")]
    ctx.probes = {
        "n1": report("n1", offloads={"tx-checksum-ip-generic": True}, offload_source="ioctl"),
        "n2": report("n2", deltas={"Udp.InCsumErrors": 3},
                     seen=[Seen("nic", "in", "e", "10.0.0.1", "request", 3)]),
    }  # fmt: skip
    [found] = checksum.run(ctx)
    assert (found.host, found.peer, found.severity, found.hop) == ("n2", "n1", "error", "n2 input")
    assert "Udp InCsumErrors +3 on n2" in found.evidence
    assert "n1's eth0: tx-checksum-ip-generic on" in found.evidence
    assert found.fix == "on n1: `ethtool -K eth0 tx-checksum-ip-generic off`"
    # Delivered after all: the errors are someone else's, a warning without a peer.
    ctx.probes["n2"].seen.append(Seen("overlay", "in", "e", "10.0.0.1", "request", 3))
    [other] = checksum.run(ctx)
    assert (other.severity, other.peer) == ("warning", None)
    ctx.probes["n2"].deltas = {"Udp.InCsumErrors": 0}
    assert checksum.run(ctx) == []


def test_the_path_mtu_finding_needs_a_real_shortfall(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.pairs = [("n1", "n2")]

    def with_mtu(mtu: PathMtu, replies: int = 3) -> list:
        ctx.probes = {"n1": report("n1", peers={"n2": PeerResult(Sent(3, replies), Sent(3, 3),
                                                                 mtu)})}  # fmt: skip
        return mtu_path.run(ctx)

    assert with_mtu(PathMtu(1500, ok=True)) == []
    assert with_mtu(PathMtu(1500, ok=False, path_mtu=1499, below=1500)) == []  # one lost probe
    assert with_mtu(PathMtu(1500, ok=False, path_mtu=1400, below=1401), replies=0) == []
    [found] = with_mtu(PathMtu(1500, ok=False, path_mtu=1400, below=1401))
    assert found.message.startswith("the underlay path n1 -> n2 carries 1400 bytes")
    assert "FLANNEL_MTU 1350" in found.fix


def test_a_duplicate_lease_on_a_hosts_address_is_told_apart_by_what_its_agent_holds(
    tmp_path: Path,
) -> None:
    """A second lease naming n2's PublicIP (the lease check reports it) must not become the
    target of n1's tunnel probe: n2's agent holds 10.5.2.0/24, so that lease is n2's."""
    ctx = context(tmp_path)
    fake = LeaseInfo("10.5.9.0/24", "10.0.0.2", "vxlan", 60, "n2", vtep_mac="02:00:00:00:00:99")
    ctx.leases = [ctx.leases[0], fake, *ctx.leases[1:]]
    assert ctx.lease_of("n2") == fake  # nothing to tell them apart by: the first one
    ctx.facts = {"n2": HostFacts("n2", subnet_env={"FLANNEL_SUBNET": "10.5.2.1/24"})}
    assert ctx.lease_of("n2").subnet == "10.5.2.0/24"
    n1 = plan_probes(ctx, marker="ab" * 8)["n1"]
    assert n1.peers[0].overlay_ip == "10.5.2.0" and n1.peers[0].vtep_mac == "02:00:00:00:00:02"
