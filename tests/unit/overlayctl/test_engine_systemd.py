"""A host phase's daemon-reloads and enables go in one round trip per run of them, in the
plan's order, with `enable --no-reload` (the plan's daemon-reload comes first where a unit
file changed); a failure names its command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest

from overlayctl.phases.base import HostPhase, OnHost, Restart, Rolling
from overlayctl.phases.engine import run_host_phase
from overlayctl.plan.changes import Action
from overlayctl.remote.ssh import Command, RemoteCommandFailed, RunResult
from overlayctl.remote.target import SshTarget
from tests.unit.overlayctl.test_phases import HOSTS, rollout


class Host:
    """Records what reaches the host, in order; FAIL: a command label that fails."""

    def __init__(self, name: str, fail: str = "") -> None:
        self.name, self.fail = name, fail
        self.target = SshTarget(name, "10.0.0.1", None)  # type: ignore[arg-type]
        self.seen: list[object] = []

    def put_files(self, files: list) -> None:
        assert files == []

    def batch(self, commands: Sequence[Command], **_kw: object) -> list[RunResult]:
        self.seen.append([label for _, label in commands])
        return [RunResult(1 if label == self.fail else 0, "", "boom\n") for _, label in commands]

    def close(self) -> None:
        pass


class Custom(HostPhase):
    name: ClassVar[str] = "custom"

    def act(self, on: OnHost, action: Action) -> None:
        if action.kind == "touch":
            on.remote.seen.append(f"touch {action.target}")  # type: ignore[attr-defined]
            return
        super().act(on, action)


ACTIONS = [
    Action("custom", "daemon-reload", "systemd"),
    Action("custom", "enable", "a"),
    Action("custom", "touch", "f"),
    Action("custom", "enable", "b"),
]


def with_hosts(fail: str = "") -> tuple[object, dict[str, Host]]:
    r = rollout(dict.fromkeys(HOSTS, ACTIONS))
    hosts = {n: Host(n, fail) for n in HOSTS}
    r.session.remotes = dict(hosts)  # type: ignore[arg-type]
    return r, hosts


def test_each_run_of_systemd_actions_is_one_round_trip_in_plan_order() -> None:
    r, hosts = with_hosts()
    run_host_phase(r, Custom())  # type: ignore[arg-type]
    for host in hosts.values():
        assert host.seen == [
            ["systemctl daemon-reload", "systemctl enable --no-reload a"],
            "touch f",
            ["systemctl enable --no-reload b"],
        ]
    assert r.report.changes == dict.fromkeys(HOSTS, 4)  # type: ignore[attr-defined]


def test_a_failed_systemd_action_fails_its_host_naming_the_command() -> None:
    r, hosts = with_hosts(fail="systemctl enable --no-reload a")
    run_host_phase(r, Custom())  # type: ignore[arg-type]
    failures = r.session.failures  # type: ignore[attr-defined]
    assert [f.error for f in failures] == [
        f"{f.host}: `systemctl enable --no-reload a` failed: boom" for f in failures
    ]
    assert {f.host for f in r.session.failures} == set(HOSTS)  # type: ignore[attr-defined]
    assert all("touch f" not in h.seen for h in hosts.values())


def test_remote_command_failed_is_what_act_systemd_raises() -> None:
    host = Host("n1", fail="systemctl daemon-reload")
    r, _ = with_hosts()
    on = OnHost(r, host, r.targets["n1"])  # type: ignore[arg-type]
    with pytest.raises(RemoteCommandFailed, match="daemon-reload"):
        Custom().act_systemd(on, ACTIONS[:1])


class OwnUnit(Custom):
    """A phase that writes only its unit's own file (the agent's and the firewall's way)."""

    restart = Restart("own", Rolling.AT_ONCE)
    unit_file_only: ClassVar[bool] = True


class Recorder(Host):
    """Keeps each command's argv too."""

    def batch(self, commands: Sequence[Command], **kw: object) -> list[RunResult]:
        self.argvs = [argv for argv, _ in commands]
        return super().batch(commands, **kw)


def test_a_phase_writing_only_its_unit_file_reloads_only_where_systemd_needs_it() -> None:
    """Its daemon-reload asks systemd first (reload-if-needed.sh, for its unit); a phase with
    drop-ins reloads always; every enable skips the SysV sync (update-rc.d)."""
    r, _ = with_hosts()
    for phase, reload_label in (
        (OwnUnit(), "sh -c <reload-if-needed> own"),
        (Custom(), "systemctl daemon-reload"),
    ):
        host = Recorder("n1")
        phase.act_systemd(OnHost(r, host, r.targets["n1"]), ACTIONS[:2])  # type: ignore[arg-type]
        assert host.seen == [[reload_label, "systemctl enable --no-reload a"]]
        assert host.argvs[1] == ["env", "SYSTEMCTL_SKIP_SYSV=1", "systemctl", "enable",
                                 "--no-reload", "a"]  # fmt: skip
