"""How long each container was unreachable while `adopt` took its host over (pure).

adopt promises that containers keep their addresses and that an outage, where one is needed, is
bounded and one host at a time. That is only a promise if it is measured: before the first host
is taken over, every host starts `ping -D -O` (a timestamp per reply, a line per missing one)
towards every container of every other host; after the last, the logs are read back and each
target's longest silence is the outage the others saw. The pings run in the hosts' own network
namespace, not in a container's: a container stopped by a docker restart on the source host
would take the probe's namespace with it, while the target side is what the operator's clients
feel.

This module parses the container list and the ping logs, and judges the result; the probe's
script is remote/scripts/outage-probe.sh.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

# `[1764746000.123456] 64 bytes from 172.21.31.2: icmp_seq=1 ttl=63 time=0.512 ms`
_REPLY = re.compile(r"^\[(\d+(?:\.\d+)?)\] \d+ bytes from [^:]+: icmp_seq=(\d+)")
# `[1764746000.323456] no answer yet for icmp_seq=2`
_MISSED = re.compile(r"^\[(\d+(?:\.\d+)?)\] no answer yet for icmp_seq=(\d+)")


@dataclass(frozen=True)
class Container:
    """A running container as `docker inspect` tells it (outage-probe.sh's `list`)."""

    id: str
    name: str
    pid: int
    started_at: str
    restart_policy: str
    ip: str


def parse_containers(text: str) -> list[Container]:
    """outage-probe.sh `list` output: `ID NAME PID STARTED POLICY IP` per line; containers
    without an address (host network, stopped) are left out: nothing can ping them."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or not fields[2].isdigit() or fields[5] in ("", "-"):
            continue
        cid, name, pid, started, policy, ip = fields
        found.append(Container(cid, name.lstrip("/"), int(pid), started, policy or "no", ip))
    return found


@dataclass(frozen=True)
class Silence:
    """The longest time between two replies (or from the start, or until the end)."""

    seconds: float
    since: float  # epoch seconds: the last reply before it (or the probe's start)
    until: float  # the first reply after it (or the probe's end)


@dataclass
class PingLog:
    """One probe: what it pinged and what came back."""

    target: str
    replies: list[float] = field(default_factory=list)  # epoch seconds of each reply
    missed: int = 0  # `no answer yet` lines

    @property
    def sent(self) -> int:
        return len(self.replies) + self.missed


def parse_ping_log(target: str, text: str) -> PingLog:
    """`ping -D -O` output into a PingLog. Anything else on a line (ping's header and summary,
    a truncated last line) is skipped: a probe killed mid-write still reads."""
    log = PingLog(target)
    for line in text.splitlines():
        if m := _REPLY.match(line):
            log.replies.append(float(m.group(1)))
        elif _MISSED.match(line):
            log.missed += 1
    log.replies.sort()
    return log


def longest_silence(log: PingLog, start: float, end: float) -> Silence:
    """The longest stretch in [START, END] with no reply: between replies, before the first or
    after the last. A probe that never got an answer was silent for all of it."""
    marks = [start, *(t for t in log.replies if start <= t <= end), end]
    best = Silence(0.0, start, start)
    for before, after in itertools.pairwise(marks):
        if after - before > best.seconds:
            best = Silence(after - before, before, after)
    return best


@dataclass(frozen=True)
class Outage:
    """What one target host's containers lived through, as every other host saw it."""

    host: str
    kept: list[str]  # containers with the same ID and start time as before
    restarted: list[str]  # same name, new start time (docker or its restart policy restarted it)
    gone: list[str]  # running before, not now
    longest_s: float  # the longest silence any peer saw towards any of its containers
    since: float
    until: float
    seen_from: str  # the peer that saw it

    def line(self) -> str:
        """`node2: containers kept 2, restarted 0, gone 0; longest silence 0.4 s (from node1)`."""
        text = (
            f"{self.host}: containers kept {len(self.kept)}, restarted {len(self.restarted)}, "
            f"gone {len(self.gone)}; longest silence {self.longest_s:.1f} s"
        )
        extra = [f"from {self.seen_from}"] if self.seen_from else []
        if self.restarted:
            extra.append("restarted: " + ", ".join(self.restarted))
        if self.gone:
            extra.append("gone: " + ", ".join(self.gone))
        return text + (f" ({'; '.join(extra)})" if extra else "")


def judge(
    host: str,
    *,
    before: list[Container],
    after: list[Container],
    logs: dict[str, list[PingLog]],
    start: float,
    end: float,
) -> Outage:
    """HOST's outage: its containers BEFORE and AFTER adoption, and LOGS (peer host -> the
    probes it ran towards HOST's containers) between START and END."""
    now = {c.name: c for c in after}
    kept, restarted, gone = [], [], []
    for c in before:
        later = now.get(c.name)
        if later is None:
            gone.append(c.name)
        elif (later.id, later.started_at) == (c.id, c.started_at):
            kept.append(c.name)
        else:
            restarted.append(c.name)
    worst, seen_from = Silence(0.0, start, start), ""
    for peer, probes in sorted(logs.items()):
        for log in probes:
            silence = longest_silence(log, start, end)
            if silence.seconds > worst.seconds:
                worst, seen_from = silence, peer
    return Outage(host, kept, restarted, gone, round(worst.seconds, 3), worst.since,
                  worst.until, seen_from)  # fmt: skip


def overlapping(outages: list[Outage], floor_s: float = 1.0) -> list[tuple[str, str, float]]:
    """Pairs of hosts whose silences longer than FLOOR_S overlap in time, with the seconds they
    share: adopt takes hosts over one at a time, so two hosts down together would break that.
    It is a hint, not a verdict: the probes run on the hosts, so while one host restarts its
    agent or docker its view of the others goes quiet too, and both silences overlap although
    only one host was down (a backend switch restarts every host, one after another)."""
    real = [o for o in outages if o.longest_s > floor_s]
    return [
        (a.host, b.host, round(min(a.until, b.until) - max(a.since, b.since), 1))
        for i, a in enumerate(real)
        for b in real[i + 1 :]
        if a.since < b.until and b.since < a.until
    ]
