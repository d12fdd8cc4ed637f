"""`verify` without hosts: ping's output read back, the verdicts, and run_verify's decisions.

The hosts are a scripted stand-in for Remote that answers each command `verify` runs with the
output real docker, iproute2 and iputils print, so what is checked here is exactly what the
code makes of that output: RTTs, the Don't-Fragment size, clashing container addresses, hosts
that could not be tested and how they count.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from overlayctl.actions import verify
from overlayctl.actions.verify import Container, PairResult, VerifyOptions, VerifyReport
from overlayctl.inventory import parse_inventory
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.session import Reporter, RunOptions, Session
from overlayctl.remote.ssh import RemoteCommandFailed, RunResult, command_of

IPUTILS_OK = """PING 172.21.2.2 (172.21.2.2) 56(84) bytes of data.

--- 172.21.2.2 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 1001ms
rtt min/avg/max/mdev = 0.097/0.130/0.163/0.033 ms
"""
IPUTILS_LOST = """PING 172.21.2.2 (172.21.2.2) 56(84) bytes of data.

--- 172.21.2.2 ping statistics ---
2 packets transmitted, 0 received, 100% packet loss, time 1030ms

"""
BUSYBOX_OK = """PING 172.21.2.2 (172.21.2.2): 56 data bytes

--- 172.21.2.2 ping statistics ---
2 packets transmitted, 2 packets received, 0% packet loss
round-trip min/avg/max = 0.081/0.094/0.107 ms
"""


# --- the RTT regex ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "avg"),
    [(IPUTILS_OK, "0.130"), (BUSYBOX_OK, "0.094"), (IPUTILS_LOST, None)],
    ids=["iputils", "busybox", "all-lost"],
)
def test_rtt_is_the_average_of_the_summary_line(output: str, avg: str | None) -> None:
    match = verify._RTT.search(output)
    assert (match.group(1) if match else None) == avg


def test_rtt_ignores_the_per_packet_times() -> None:
    """Without -q ping prints `time=0.163 ms` per packet: only the summary's average counts."""
    output = "64 bytes from 172.21.2.2: icmp_seq=1 ttl=63 time=0.163 ms\n" + IPUTILS_OK
    match = verify._RTT.search(output)
    assert match is not None and match.group(1) == "0.130"


# --- the verdicts -------------------------------------------------------------------------------


def all_pairs(hosts: Sequence[str], rtt: float = 0.1) -> list[PairResult]:
    return [PairResult(a, b, True, rtt, True) for a, b in itertools.product(hosts, repeat=2)]


def counts(report: VerifyReport) -> tuple[int, int, int, bool]:
    return report.expected, report.passed, report.untested, report.ok


def test_every_pair_passing_is_ok() -> None:
    report = VerifyReport(hosts=["n1", "n2"], pairs=all_pairs(["n1", "n2"]))
    assert counts(report) == (4, 4, 0, True)


def test_a_df_failure_fails_its_pair_and_the_run() -> None:
    pairs = all_pairs(["n1", "n2"])
    pairs[1] = PairResult("n1", "n2", True, 0.1, False)
    assert counts(VerifyReport(hosts=["n1", "n2"], pairs=pairs)) == (4, 3, 0, False)


def test_a_lost_ping_fails_its_pair_even_with_df_ok() -> None:
    pairs = all_pairs(["n1", "n2"])
    pairs[2] = PairResult("n2", "n1", False, None, True, "100% packet loss")
    assert counts(VerifyReport(hosts=["n1", "n2"], pairs=pairs)) == (4, 3, 0, False)


def test_a_host_that_could_not_be_tested_fails_all_of_its_pairs() -> None:
    report = VerifyReport(
        hosts=["n1", "n2", "n3"],
        pairs=all_pairs(["n1", "n2"]),
        hosts_failed={"n3": "connect: n3 (192.0.2.3): SSH port 22 unreachable: timed out"},
    )
    assert counts(report) == (9, 4, 5, False)


def test_a_failed_host_fails_the_run_even_when_every_pair_passed() -> None:
    """E.g. a container that could not be removed afterwards: said, and not ok."""
    report = VerifyReport(
        hosts=["n1"], pairs=all_pairs(["n1"]), hosts_failed={"n1": "cleanup: boom"}
    )
    assert counts(report) == (1, 1, 0, False)


def test_no_pairs_is_never_ok() -> None:
    assert counts(VerifyReport()) == (0, 0, 0, False)
    assert counts(VerifyReport(hosts=["n1", "n2"])) == (4, 0, 4, False)


# --- run_verify against scripted hosts ----------------------------------------------------------

LINK = (
    "5: eth0@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu {mtu} qdisc noqueue state UP mode "
    "DEFAULT group default \\    link/ether 02:42:ac:15:01:02 brd ff:ff:ff:ff:ff:ff "
    "link-netnsid 0\n"
)


@dataclass
class FakeHost:
    """One host's docker and its container: what `verify` asks, answered as the tools would."""

    name: str
    ip: str  # the container's address
    gateway: str  # docker0
    pid: int
    mtu: int = 1450  # the container's eth0
    image: bool = True  # busybox present
    path_mtu: int = 1450  # the overlay: Don't-Fragment pings larger than this are lost
    down: frozenset[str] = frozenset()  # addresses this host's container cannot reach
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, check: bool = True, **_kw: object) -> RunResult:
        argv = list(argv)
        self.calls.append(argv)
        result = self._answer(argv)
        if check and result.code != 0:
            raise RemoteCommandFailed(self.name, " ".join(argv), result.code, result.stderr)
        return result

    def script(self, script: HostScript, *args: str, **kw: object) -> RunResult:
        """As Remote.script: the script's own command line."""
        argv, _label = command_of(script, *args)
        return self.run(argv, **kw)  # type: ignore[arg-type]

    def _answer(self, argv: list[str]) -> RunResult:
        if argv[:2] == ["docker", "rm"]:
            return RunResult(0, argv[-1] + "\n", "")
        if argv[:3] == ["sh", "-c", verify.START.text]:
            return self._start(argv)
        if argv[:3] == ["sh", "-c", verify.PINGS.text]:
            return self._pings(argv)
        raise AssertionError(f"unexpected command on {self.name}: {argv}")

    def _start(self, argv: list[str]) -> RunResult:
        """The real verify-start.sh under sh, with stand-in `docker` and `nsenter` on PATH
        that answer as the tools would (this host's image, container and eth0 MTU) and record
        each call."""
        config = {"image": self.image, "pid": self.pid, "ip": self.ip, "gateway": self.gateway,
                  "link": LINK.format(mtu=self.mtu)}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            table, calls = Path(tmp, "config.json"), Path(tmp, "calls")
            table.write_text(json.dumps(config))
            for name in ("docker", "nsenter"):
                stub = Path(tmp, name)
                stub.write_text(START_STUB.format(python=sys.executable, table=table, calls=calls))
                stub.chmod(0o755)
            env = {**os.environ, "PATH": f"{tmp}:{os.environ['PATH']}"}
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            self.calls += [json.loads(line) for line in calls.read_text().splitlines()]
        return RunResult(done.returncode, done.stdout, done.stderr)

    def _pings(self, argv: list[str]) -> RunResult:
        """The real pings.sh under sh, with a stand-in `nsenter` on PATH that runs its command
        (here, outside any namespace) and a stand-in `ping` that answers each command line as
        _ping would (a table written beforehand) and records it with the nsenter it ran in."""
        args = argv[4:]  # marker, pid, wait, count, then target/size pairs
        base = ["nsenter", "-t", args[1], "-n", "ping", "-n", "-q", "-W", args[2]]
        answers = {}
        for target, size in zip(args[4::2], args[5::2], strict=True):
            for line in (
                [*base, "-c", args[3], "-i", "0.2", target],
                [*base, "-c", "1", "-M", "do", "-s", size, target],
            ):
                answers[json.dumps(line)] = dataclasses.astuple(self._ping(line))
        with tempfile.TemporaryDirectory() as tmp:
            table, calls = Path(tmp, "answers.json"), Path(tmp, "calls")
            table.write_text(json.dumps(answers))
            for name, text in (("nsenter", NSENTER_STUB), ("ping", PING_STUB)):
                stub = Path(tmp, name)
                stub.write_text(text.format(python=sys.executable, table=table, calls=calls))
                stub.chmod(0o755)
            env = {**os.environ, "PATH": f"{tmp}:{os.environ['PATH']}"}
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            ran = [json.loads(line) for line in calls.read_text().splitlines()]
        self.calls += sorted(ran)  # run at once: their order is the scheduler's
        return RunResult(done.returncode, done.stdout, done.stderr)

    def _ping(self, argv: list[str]) -> RunResult:
        target = argv[-1]
        if target in self.down:
            return RunResult(1, IPUTILS_LOST.replace("172.21.2.2", target), "")
        if "-M" in argv:
            size = int(argv[argv.index("-s") + 1])
            limit = 1500 if target == self.gateway else self.path_mtu
            if size + 28 > limit:
                return RunResult(1, "", f"ping: local error: message too long, mtu={limit}\n")
            return RunResult(0, IPUTILS_OK.replace("172.21.2.2", target), "")
        return RunResult(0, IPUTILS_OK.replace("172.21.2.2", target), "")

    def close(self) -> None:
        """Session closes the hosts it drops."""


class FakeSession(Session):
    """A Session whose hosts are FakeHosts: `open` connects nothing, the rest is the real one."""

    def __init__(self, hosts: list[FakeHost], unreachable: dict[str, str] | None = None) -> None:
        names = [h.name for h in hosts] + list(unreachable or {})
        data = {
            "cluster": {"name": "c", "network": "172.21.0.0/16"},
            "hosts": [{"name": name, "address": f"192.0.2.{i}"} for i, name in enumerate(names, 1)],
        }
        inv = parse_inventory(data, base_dir=Path("/x"))[0]
        self.lines: list[str] = []
        super().__init__(inv, Reporter(None, echo=self.lines.append), RunOptions(), "verify")
        self._fakes = hosts
        self._unreachable = unreachable or {}

    def open(self) -> None:
        self.remotes.update({h.name: h for h in self._fakes})  # type: ignore[misc]
        for name, why in self._unreachable.items():
            self.fail(name, "connect", why)


START_STUB = """#!{python}
import json, os, sys
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
with open("{calls}", "a") as calls:
    calls.write(json.dumps(argv) + "\\n")
host = json.load(open("{table}"))
imported = "{table}.imported"  # the image once `docker import` made it
present = host["image"] or os.path.exists(imported)
if argv[:3] == ["docker", "image", "inspect"]:
    if not present:
        sys.stderr.write("Error: No such image: " + argv[3] + "\\n")
        sys.exit(1)
    print("[]")
elif argv[:2] == ["docker", "import"]:
    open(imported, "w").close()
    print("sha256:0123")
elif argv[:2] == ["docker", "run"]:
    if not present:
        sys.stderr.write("Unable to find image '" + argv[-3] + "' locally\\n")
        sys.exit(125)
    print("0123456789ab")
elif argv[:3] == ["docker", "inspect", "-f"]:
    print(host["pid"], host["ip"], host["gateway"])
elif argv[0] == "nsenter" and argv[4:] == ["ip", "-o", "link", "show", "eth0"]:
    sys.stdout.write(host["link"])
else:
    sys.exit(99)
"""
NSENTER_STUB = """#!/bin/sh
# nsenter -t PID -n COMMAND...: COMMAND here, told which namespace it stands in
[ "$1" = -t ] && [ "$3" = -n ] || exit 99
export STUB_NETNS_PID=$2
shift 3
exec "$@"
"""
PING_STUB = """#!{python}
import json, os, sys
argv = ["nsenter", "-t", os.environ["STUB_NETNS_PID"], "-n", "ping", *sys.argv[1:]]
with open("{calls}", "a") as calls:
    calls.write(json.dumps(argv) + "\\n")
code, out, err = json.load(open("{table}"))[json.dumps(argv)]
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(code)
"""


def overlay_hosts(count: int, **kw: object) -> list[FakeHost]:
    """COUNT hosts with containers on their own overlay subnets (172.21.N.0/24)."""
    return [
        FakeHost(f"n{n}", f"172.21.{n}.2", f"172.21.{n}.1", 4000 + n, **kw)  # type: ignore[arg-type]
        for n in range(1, count + 1)
    ]


def test_all_pairs_pass_with_the_ping_average_and_df_at_the_overlay_mtu() -> None:
    hosts = overlay_hosts(2)
    report = verify.run_verify(FakeSession(hosts), VerifyOptions())
    assert report.pairs == [
        PairResult("n1", "n1", True, 0.13, True),
        PairResult("n1", "n2", True, 0.13, True),
        PairResult("n2", "n1", True, 0.13, True),
        PairResult("n2", "n2", True, 0.13, True),
    ]
    assert (report.hosts, report.hosts_failed, report.ok) == (["n1", "n2"], {}, True)
    pings = [c for c in hosts[0].calls if "ping" in c]
    base = ["nsenter", "-t", "4001", "-n", "ping", "-n", "-q", "-W", "2"]
    assert pings == sorted([
        [*base, "-c", "2", "-i", "0.2", "172.21.1.1"],  # the diagonal: its own docker0
        [*base, "-c", "1", "-M", "do", "-s", "1422", "172.21.1.1"],  # 1450 - 20 - 8
        [*base, "-c", "2", "-i", "0.2", "172.21.2.2"],
        [*base, "-c", "1", "-M", "do", "-s", "1422", "172.21.2.2"],
    ])  # fmt: skip
    assert hosts[0].calls[-1][:3] == ["docker", "rm", "-f"]  # removed afterwards


def test_containers_not_told_the_overlay_mtu_fail_df_across_hosts_only() -> None:
    """docker's MTU 1500 over a 1450 overlay: plain pings pass, DF at 1472 is lost between
    hosts; the diagonal (docker0, no overlay) passes."""
    report = verify.run_verify(FakeSession(overlay_hosts(2, mtu=1500)), VerifyOptions())
    assert [(p.src, p.dst, p.ok, p.mtu_ok) for p in report.pairs] == [
        ("n1", "n1", True, True),
        ("n1", "n2", True, False),
        ("n2", "n1", True, False),
        ("n2", "n2", True, True),
    ]
    assert counts(report) == (4, 2, 0, False)


def test_a_lost_ping_keeps_ping_s_last_line_as_the_error() -> None:
    hosts = overlay_hosts(2)
    hosts[0].down = frozenset({"172.21.2.2"})
    report = verify.run_verify(FakeSession(hosts), VerifyOptions())
    assert report.pairs[1] == PairResult(
        "n1", "n2", False, None, False,  # unreachable: the DF ping is lost too
        "2 packets transmitted, 0 received, 100% packet loss, time 1030ms",
    )  # fmt: skip
    assert counts(report) == (4, 3, 0, False)


def test_clashing_container_addresses_fail_those_hosts_and_ping_nothing() -> None:
    """docker on its default bridge everywhere: every container is 172.17.0.2, and a "ping" to
    another host would only reach itself."""
    hosts = [
        FakeHost("n1", "172.17.0.2", "172.17.0.1", 4001),
        FakeHost("n2", "172.17.0.2", "172.17.0.1", 4002),
        FakeHost("n3", "172.21.3.2", "172.21.3.1", 4003),
    ]
    report = verify.run_verify(FakeSession(hosts), VerifyOptions())
    why = "docker is not using this host's overlay subnet (--bip)"
    assert report.hosts_failed == {
        "n1": f"container address 172.17.0.2 is also used on n2: {why}",
        "n2": f"container address 172.17.0.2 is also used on n1: {why}",
    }
    assert report.pairs == []
    assert counts(report) == (9, 0, 9, False)
    assert not [c for h in hosts for c in h.calls if "ping" in c]
    assert [h.calls[-1][:3] for h in hosts] == [["docker", "rm", "-f"]] * 3  # all cleaned up


def test_hosts_that_could_not_be_tested_are_failed_with_their_phase() -> None:
    """n3 has no image (and no --import-from), n4 did not answer SSH: the others are tested."""
    hosts = overlay_hosts(3)
    hosts[2].image = False
    unreachable = {"n4": "n4 (192.0.2.4): SSH port 22 unreachable: timed out"}
    report = verify.run_verify(FakeSession(hosts, unreachable), VerifyOptions())
    assert report.hosts_failed == {
        "n4": "connect: n4 (192.0.2.4): SSH port 22 unreachable: timed out",
        "n3": "verify: n3: image 'busybox' is not present (no --pull here)",
    }
    assert [(p.src, p.dst) for p in report.pairs] == list(itertools.product(["n1", "n2"], repeat=2))
    assert counts(report) == (16, 4, 12, False)


def test_start_container_reads_the_mtu_inside_the_container() -> None:
    host = FakeHost("n1", "172.21.1.2", "172.21.1.1", 4001, mtu=1450)
    inv_host = FakeSession([host]).inv.hosts[0]
    got = verify.start_container(host, inv_host, VerifyOptions(), "abc")  # type: ignore[arg-type]
    assert got == Container("n1", "overlayctl-verify-abc", 4001, "172.21.1.2", "172.21.1.1", 1450)
    # The image is looked at only when the run fails (each docker command is a Go start).
    assert [c[:2] for c in host.calls if c[0] == "docker"] == [
        ["docker", "run"],
        ["docker", "inspect"],
    ]


def test_an_absent_image_is_imported_from_the_tar_in_the_same_round_trip() -> None:
    host = FakeHost("n1", "172.21.1.2", "172.21.1.1", 4001, image=False)
    inv_host = FakeSession([host]).inv.hosts[0]
    options = VerifyOptions(image="lab/busybox:1", import_from="/srv/busybox.tar")
    got = verify.start_container(host, inv_host, options, "abc")  # type: ignore[arg-type]
    assert got.pid == 4001 and got.mtu == 1450
    assert ["docker", "import", "/srv/busybox.tar", "lab/busybox:1"] in host.calls
    run = next(c for c in host.calls if c[:2] == ["docker", "run"])
    assert run[2:] == ["-d", "--rm", "--pull=never", "--name", "overlayctl-verify-abc",
                       "lab/busybox:1", "sleep", "600"]  # fmt: skip
    assert sum(1 for c in host.calls if c[:2] == ["sh", "-c"]) == 1  # one round trip
