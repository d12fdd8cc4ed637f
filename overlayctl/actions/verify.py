"""`overlayctl verify`: the seed's section 5.8 for every pair. One test container per host, then
each container pings every other one, once plainly and once with Don't-Fragment at the largest
size the overlay MTU allows (a wrong MTU shows there and nowhere else).

`--sample K` (clusters past ~50 hosts): each container pings K peers, chosen by a rotation
(sample_peers) so that ceil((N-1)/K) consecutive runs cover every pair; the pairs a run leaves
out are reported as untested, never as passed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from overlayctl.errors import OverlayctlError
from overlayctl.inventory.model import Host
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.session import Session
from overlayctl.remote.ssh import Remote

_RTT = re.compile(r"= [\d.]+/([\d.]+)/")
PINGS = HostScript("pings.sh")
START = HostScript("verify-start.sh")


@dataclass(frozen=True)
class VerifyOptions:
    image: str = "busybox"
    import_from: str | None = None  # a tar on the hosts to `docker import` when the image is absent
    count: int = 2
    timeout_s: int = 2
    sample: int | None = None  # K peers per host (None: every peer)
    sample_round: int = 0  # which rotation of the sample (see sample_peers)


@dataclass
class Container:
    host: str
    name: str
    pid: int
    ip: str
    gateway: str  # the host's docker0 address
    mtu: int


@dataclass
class PairResult:
    src: str
    dst: str
    ok: bool
    rtt_ms: float | None
    mtu_ok: bool
    error: str = ""


@dataclass
class VerifyReport:
    hosts: list[str] = field(default_factory=list)  # every node host: the matrix is hosts x hosts
    pairs: list[PairResult] = field(default_factory=list)
    hosts_failed: dict[str, str] = field(default_factory=dict)
    sampled: int | None = None  # --sample K: each host pinged K peers (and its own docker0)
    sample_round: int = 0
    planned: list[tuple[str, str]] = field(default_factory=list)  # a sampled run's pairs

    @property
    def expected(self) -> int:
        """The pairs this run set out to test: every pair, or a sample's."""
        return len(self.planned) if self.sampled else len(self.hosts) ** 2

    @property
    def untested_pairs(self) -> list[tuple[str, str]]:
        """Every (from, to) of the matrix without a result: left out of the sample, or on a
        host that could not be tested."""
        tested = {(p.src, p.dst) for p in self.pairs}
        return [(a, b) for a in self.hosts for b in self.hosts if (a, b) not in tested]

    @property
    def passed(self) -> int:
        return sum(p.ok and p.mtu_ok for p in self.pairs)

    @property
    def untested(self) -> int:
        """Pairs with no result: a host that could not be tested fails all of its pairs."""
        return max(self.expected - len(self.pairs), 0)

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and not self.hosts_failed and self.passed == self.expected

    @property
    def doctor_pairs(self) -> list[tuple[str, str]]:
        """The failed pairs between two hosts, each once whichever way it failed: what to hand
        `overlayctl doctor --pair` next (a host's own diagonal is not a pair)."""
        failed = {tuple(sorted((p.src, p.dst))) for p in self.pairs
                  if p.src != p.dst and not (p.ok and p.mtu_ok)}  # fmt: skip
        return sorted(failed)  # type: ignore[arg-type]


def sample_peers(hosts: list[str], k: int, round_: int) -> dict[str, list[str]]:
    """Pure: each of HOSTS -> the hosts its container pings in rotation ROUND_ of a K sample,
    itself first (the diagonal: its own docker0).

    Host i pings host (i + d) mod N for the K offsets d = 1 + (ROUND_*K + j) mod (N-1),
    j < K: K distinct peers, never itself; rounds 0 .. ceil((N-1)/K)-1 together use every
    offset 1 .. N-1, so every ordered pair. K of N-1 or more is every peer."""
    n = len(hosts)
    offsets = sorted({1 + (round_ * k + j) % (n - 1) for j in range(min(k, n - 1))})
    return {h: [h] + [hosts[(i + d) % n] for d in offsets] for i, h in enumerate(hosts)}


def rounds_to_cover(hosts: int, k: int) -> int:
    """How many consecutive rounds of a K sample cover every pair of HOSTS hosts."""
    return max(1, -(-(hosts - 1) // k)) if hosts > 1 else 1


def start_container(remote: Remote, host: Host, options: VerifyOptions, tag: str) -> Container:
    """HOST's test container (imported from --import-from when the image is absent), with its
    PID, address, gateway and eth0's MTU: one round trip (remote/scripts/verify-start.sh)."""
    name = f"overlayctl-verify-{tag}"
    got = remote.script(START, options.image, options.import_from or "", name, check=False,
                        timeout=180, waiting_for="the test container")  # fmt: skip
    if got.code != 0:
        why = (got.stderr.strip().splitlines() or [f"exit {got.code}"])[-1]
        raise OverlayctlError(f"{host.name}: {why}")
    first, _, link = got.stdout.partition("\n")
    pid, ip, gateway = first.split()
    mtu = re.search(r" mtu (\d+)", link)
    if mtu is None:
        raise OverlayctlError(f"{host.name}: no MTU for the test container's eth0: {link!r}")
    return Container(host.name, name, int(pid), ip, gateway, int(mtu.group(1)))


def pings_from(
    remote: Remote, src: Container, dsts: list[Container], options: VerifyOptions
) -> list[PairResult]:
    """SRC's container pings every one of DSTS, plainly and with Don't-Fragment, all at once on
    its host (remote/scripts/pings.sh, the host's ping inside the container's namespace: any
    image works). One round trip per host however many peers, and a lost peer costs its
    timeout once rather than delaying every ping after it (in turn, each peer cost a round trip
    and a ping of about a second).

    A container "pinging itself" pings its host's docker0 instead: the matrix's diagonal checks
    the local bridge (and its MTU), the rest checks the overlay.
    """
    marker = f"--overlayctl-ping-{secrets.token_hex(6)}--"
    args = [marker, str(src.pid), str(options.timeout_s), str(options.count)]
    for dst in dsts:
        # The largest ICMP payload that fits the overlay MTU: MTU - 20 (IPv4) - 8 (ICMP).
        args += [dst.gateway if dst is src else dst.ip, str(min(src.mtu, dst.mtu) - 28)]
    ran = remote.script(PINGS, *args, check=False, timeout=60, waiting_for="pings")
    found = parse_pings(ran.stdout, marker)
    unran = (255, (ran.stderr.strip().splitlines() or ["ping did not run"])[-1])
    results = []
    for index, dst in enumerate(dsts):
        plain_code, plain = found.get((index, "plain"), unran)
        df_code, _ = found.get((index, "df"), unran)
        match = _RTT.search(plain)
        error = "" if plain_code == 0 else (plain.strip().splitlines() or ["?"])[-1]
        results.append(PairResult(src.host, dst.host, plain_code == 0,
                                  float(match.group(1)) if match else None, df_code == 0,
                                  error))  # fmt: skip
    return results


def parse_pings(text: str, marker: str) -> dict[tuple[int, str], tuple[int, str]]:
    """pings.sh's output: (target index, "plain" or "df") -> (ping's exit code, its stdout)."""
    found: dict[tuple[int, str], tuple[int, str]] = {}
    key: tuple[int, str] | None = None
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) == 4 and fields[0] == marker and fields[1].isdigit() and fields[3].isdigit():
            key = (int(fields[1]), fields[2])
            found[key] = (int(fields[3]), "")
        elif key is not None:
            code, out = found[key]
            found[key] = (code, out + line)
    return found


def run_verify(session: Session, options: VerifyOptions) -> VerifyReport:
    report = VerifyReport(hosts=[h.name for h in session.inv.hosts if h.is_node])
    peers = {h: list(report.hosts) for h in report.hosts}
    if options.sample is not None:
        peers = sample_peers(report.hosts, options.sample, options.sample_round)
        report.sampled, report.sample_round = options.sample, options.sample_round
        report.planned = [(src, dst) for src, dsts in peers.items() for dst in dsts]
    tag = secrets.token_hex(3)
    session.open()
    nodes = [h for h in session.alive if h.is_node]
    started = session.each("verify", lambda h, r: start_container(r, h, options, tag), nodes)
    containers = {h.name: started.succeeded[h.name] for h in nodes if h.name in started.succeeded}
    by_ip: dict[str, list[str]] = {}
    for c in containers.values():
        by_ip.setdefault(c.ip, []).append(c.host)
    clashes = {ip: names for ip, names in by_ip.items() if len(names) > 1}
    try:

        def pings(host: Host, remote: Remote) -> list[PairResult]:
            src = containers[host.name]
            dsts = [containers[name] for name in peers[host.name] if name in containers]
            return pings_from(remote, src, dsts, options)

        if clashes:
            # Containers on different hosts with one address: docker is not on the overlay
            # (its default 172.17.0.0/16 everywhere); any "ping" would only reach itself.
            for ip, names in clashes.items():
                for name in names:
                    others = ", ".join(n for n in names if n != name)
                    report.hosts_failed[name] = (
                        f"container address {ip} is also used on {others}: docker is not "
                        "using this host's overlay subnet (--bip)"
                    )
        else:
            # Every host at once, whatever --parallel says: a host's pings are waits, and the
            # pings towards a host whose turn has not come would find its container anyway.
            sources = [h for h in nodes if h.name in containers]
            results = session.each("verify", pings, sources, parallel=max(1, len(sources)))
            for name in containers:
                report.pairs += results.succeeded.get(name, [])
    finally:

        def remove(host: Host, remote: Remote) -> None:
            remote.run(["docker", "rm", "-f", containers[host.name].name], check=False)

        done = [h for h in nodes if h.name in containers]
        session.each("cleanup", remove, done, parallel=max(1, len(done)))  # waits, as the pings
    for failure in session.failures:
        report.hosts_failed[failure.host] = f"{failure.phase}: {failure.error}"
    return report
