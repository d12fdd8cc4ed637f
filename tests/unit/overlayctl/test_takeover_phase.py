"""adopt's TakeOver phase on a stand-in host: when docker is still bound to flanneld after the
mask (risk 2 of docs/design/adopt.md: stopping flanneld would stop docker and every container),
nothing is stopped and every file it changed is put back; a host without flanneld is left to
init's phases. The host answers from the state a lab host printed
(fixtures/takeover-state-node2.txt)."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd.imported import Imported
from overlayctl.phases.adopt_takeover import (
    FILES,
    STATE,
    TakeOver,
    TakeoverProbe,
    host_plan,
    ours,
)
from overlayctl.phases.base import OnHost, Rollout, RolloutOptions, Target
from overlayctl.plan.changes import HostPlan
from overlayctl.plan.facts import parse_facts
from overlayctl.plan.takeover import parse_state, plan_takeover
from overlayctl.remote.session import Reporter, Session
from overlayctl.remote.ssh import RunResult
from tests.unit.overlayctl.test_docker_takeover import OVERRIDE, runbook
from tests.unit.overlayctl.test_takeover_plan import NODE2, taken_over

BACKUP = "/var/lib/overlayctl/backup"


class Host:
    """Answers TakeOver's commands; SHOW is what `systemctl show docker` says after the
    daemon-reload (docker's own unit may still require flanneld)."""

    def __init__(self, state: str, show: str) -> None:
        self.state, self.show = state, show
        self.backup_root = BACKUP
        self.calls: list[str] = []

    def script(self, script, *args: str, **_kw) -> RunResult:  # type: ignore[no-untyped-def]
        if script is STATE:
            self.calls.append("state")
            return RunResult(0, self.state, "")
        assert script is FILES, script
        self.calls.append(" ".join(["files", args[0], *args[2:]]))
        return RunResult(0, "", "")

    def put_files(self, files: list) -> None:
        self.calls += [f"put {path}" for path, *_ in files]

    def batch(self, commands: list, **_kw) -> list[RunResult]:
        self.calls += [label for _, label in commands]
        return [RunResult(0, self.show if "show" in label else "", "") for _, label in commands]

    def run(self, argv: list[str], **_kw) -> RunResult:  # type: ignore[no-untyped-def]
        self.calls.append(" ".join(argv))
        return RunResult(0, "", "")


def on_host(host: Host) -> OnHost:
    inv = runbook()
    node = dataclasses.replace(inv.hosts[1], os="debian")
    session = Session(inv, Reporter(None, echo=lambda _line: None), RolloutOptions(), "test")
    target = Target(node, parse_facts("os_id=debian\n"), HostPlan(node.name))
    return OnHost(Rollout(session, RolloutOptions()), host, target)  # type: ignore[arg-type]


def test_docker_still_bound_to_flanneld_stops_nothing_and_puts_everything_back() -> None:
    bound = "Requires=docker.socket flanneld.service\nExecStart={ path=x ; argv[]=x ; x }\n"
    host = Host(NODE2, bound)
    on = on_host(host)
    state = parse_state(NODE2)
    plan = plan_takeover(state, "172.21.5.0/24", ours(on), "192.168.255.155")
    probe = TakeoverProbe(restart=True, state=state, plan=plan, expected="172.21.5.0/24")
    with pytest.raises(OverlayctlError) as caught:
        TakeOver().restart_unit(on, probe, together=False)
    message = str(caught.value)
    assert "stopping flanneld would stop docker (docker's Requires=flanneld.service)" in message
    assert "all put back" in message
    calls = host.calls
    assert f"put {hp.DOCKER_DROPIN}" in calls and f"files stash {OVERRIDE}" in calls
    assert "files stash /etc/systemd/system/flanneld.service" in calls
    restore = next(c for c in calls if c.startswith("files restore"))
    assert restore == (f"files restore {hp.DOCKER_DROPIN} {OVERRIDE} "
                       "/etc/systemd/system/flanneld.service")  # fmt: skip
    assert "systemctl unmask --no-reload flanneld.service" in calls
    assert calls.index("systemctl unmask --no-reload flanneld.service") < calls.index(restore)
    assert "systemctl enable --no-reload flanneld.service" in calls
    assert not [c for c in calls if "stop" in c or "overlay-agent" in c or "start " in c], calls


def test_a_host_without_flanneld_is_left_to_inits_phases() -> None:
    bare = NODE2.replace("LoadState=loaded", "LoadState=not-found")
    host = Host(bare, "")
    got = TakeOver().probe(on_host(host))
    assert not got.restart and host.calls == ["state"]


def test_a_refused_host_changes_nothing() -> None:
    mixed = "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd\nLimitNOFILE=1\n"
    text = NODE2.replace(
        NODE2.split(f"file={OVERRIDE} ")[1].split("\n")[0],
        base64.b64encode(mixed.encode()).decode(),
    )
    host = Host(text, "")
    phase = TakeOver()
    phase._imported = Imported("udp", True, {})  # ImportV2 has not run
    with pytest.raises(OverlayctlError) as caught:
        phase.probe(on_host(host))
    assert "node2: no lease of 192.168.255.155 in etcd's v3 key space" in str(caught.value)
    assert f"{OVERRIDE} sets LimitNOFILE besides ExecStart" in str(caught.value)
    assert host.calls == ["state"]


def test_a_settled_host_needs_no_imported_lease() -> None:
    """Re-running adopt after the v2 keys went (and the import plan is empty): a host whose
    flanneld is masked and whose agent is ready is done, its lease not asked for."""
    host = Host(taken_over(), "")
    on = on_host(host)

    def imported() -> str | None:
        raise AssertionError("asked for the imported lease")

    plan = host_plan(on, parse_state(taken_over()), imported)
    assert plan is not None and plan.steps() == [] and plan.refusals == ()
    assert not TakeOver().probe(on).restart  # (no etcd read: it would fail here)
    running = taken_over().replace("unit=flanneld ActiveState=inactive",
                                   "unit=flanneld ActiveState=active")  # fmt: skip
    plan = host_plan(on, parse_state(running), lambda: None)
    assert plan is not None and plan.refusals[0].startswith("no lease of 192.168.255.155")
