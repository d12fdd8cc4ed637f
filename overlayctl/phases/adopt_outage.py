"""adopt's outage measurement: probes started before the first host is taken over, read back and
judged after the last (plan/outage.py says what is measured and why from the hosts' side).

Two cluster phases share one `OutageProbes`: `ProbeStart` records every node host's running
containers and starts the pings, `OutageReport` stops them, lists the containers again and
prints one line per host. The probes end on their own (`timeout`) if a run dies between the
two, so a failed adoption leaves no ping running for long; `stop` also runs from the action's
cleanup.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from overlayctl.inventory.model import Host
from overlayctl.phases.base import Rollout
from overlayctl.plan import outage as judged
from overlayctl.plan.outage import Container, Outage, PingLog
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote

PROBE = HostScript("outage-probe.sh")
TITLE = "outage"
# How long a probe may outlive the run that started it; an adoption of a large cluster, one
# host at a time with a docker restart each, stays far below.
PROBE_SECONDS = 3600
MAX_TARGETS_PER_HOST = 8  # containers of one host that the others ping


@dataclass
class OutageProbes:
    """The probes of one run: where each host keeps them, what they ping, and the result."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    before: dict[str, list[Container]] = field(default_factory=dict)
    targets: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> ip -> owner
    started: float = 0.0
    outages: list[Outage] = field(default_factory=list)
    running: bool = False

    @property
    def folder(self) -> str:
        return f"/run/overlayctl/adopt-probe-{self.tag}"

    def start(self, rollout: Rollout) -> None:
        nodes = [h for h in rollout.session.alive if h.is_node]
        listed = rollout.session.each(TITLE, _list, nodes)
        self.before = dict(listed.succeeded)
        owners = {
            c.ip: name
            for name, containers in self.before.items()
            for c in containers[:MAX_TARGETS_PER_HOST]
        }
        self.targets = {
            h.name: {ip: owner for ip, owner in owners.items() if owner != h.name}
            for h in nodes
            if h.name in self.before
        }
        self.started = time.time()

        def start(host: Host, remote: Remote) -> None:
            ips = sorted(self.targets.get(host.name, {}))
            if ips:
                remote.script(PROBE, "start", self.folder, str(PROBE_SECONDS), *ips)

        rollout.session.each(TITLE, start, nodes)
        self.running = True
        count = sum(len(t) for t in self.targets.values())
        rollout.say("cluster", TITLE, f"{count} probes towards "
                    f"{sum(len(c) for c in self.before.values())} containers")  # fmt: skip

    def stop(self, rollout: Rollout) -> dict[str, dict[str, list[PingLog]]]:
        """Stop every probe; target host -> source host -> its probes' logs."""
        if not self.running:
            return {}
        self.running = False
        marker = f"--overlayctl-probe-{self.tag}--"
        sources = [h for h in rollout.session.alive if self.targets.get(h.name)]

        def stop(host: Host, remote: Remote) -> list[PingLog]:
            got = remote.script(PROBE, "stop", self.folder, marker, check=False)
            return _split_logs(got.stdout, marker)

        read = rollout.session.each(TITLE, stop, sources)
        seen: dict[str, dict[str, list[PingLog]]] = {}
        for source, logs in read.succeeded.items():
            for log in logs:
                owner = self.targets[source].get(log.target)
                if owner is not None:
                    seen.setdefault(owner, {}).setdefault(source, []).append(log)
        return seen

    def finish(self, rollout: Rollout) -> list[Outage]:
        end = time.time()
        seen = self.stop(rollout)
        nodes = [h for h in rollout.session.alive if h.name in self.before]
        after = rollout.session.each(TITLE, _list, nodes).succeeded
        self.outages = [
            judged.judge(
                name,
                before=self.before[name],
                after=after.get(name, []),
                logs=seen.get(name, {}),
                start=self.started,
                end=end,
            )
            for name in self.before
            if name in after
        ]
        return self.outages


def _list(host: Host, remote: Remote) -> list[Container]:
    return judged.parse_containers(remote.script(PROBE, "list").stdout)


def _split_logs(text: str, marker: str) -> list[PingLog]:
    """outage-probe.sh `stop` output: a `MARKER N TARGET` line before each probe's log."""
    logs: list[PingLog] = []
    target, lines = "", []
    for line in [*text.splitlines(), f"{marker} end -"]:
        fields = line.split()
        if len(fields) == 3 and fields[0] == marker:
            if target:
                logs.append(judged.parse_ping_log(target, "\n".join(lines)))
            target, lines = fields[2], []
        else:
            lines.append(line)
    return logs


@dataclass
class ProbeStart:
    """Containers listed and pings started, before the first host is taken over."""

    probes: OutageProbes
    title: str = TITLE

    def should_run(self, rollout: Rollout) -> bool:
        return any(h.is_node for h in rollout.session.alive)

    def run(self, rollout: Rollout) -> None:
        self.probes.start(rollout)


@dataclass
class OutageReport:
    """One line per host: its containers kept, restarted or gone, and the longest silence its
    peers saw; hosts whose outages overlapped are named (adopt goes one host at a time)."""

    probes: OutageProbes
    title: str = TITLE

    def should_run(self, rollout: Rollout) -> bool:
        return self.probes.running

    def run(self, rollout: Rollout) -> None:
        for outage in self.probes.finish(rollout):
            rollout.say(outage.host, self.title, outage.line())
        for a, b, seconds in judged.overlapping(self.probes.outages):
            rollout.say("cluster", self.title, f"{a} and {b} silent at the same time for "
                        f"{seconds:.1f} s (a host restarting its agent or docker also stops "
                        "hearing the others)")  # fmt: skip
