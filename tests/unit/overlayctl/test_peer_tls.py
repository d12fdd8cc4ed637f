"""The peer-TLS stepper (etcd/peer_tls.py), pure: every partial state of the rounds R1, U1, R2,
U2 gives the right next step, and from any state a run (or a run cut anywhere and resumed)
reaches https:2380 without ever breaking the invariant: each member listens on every URL the
membership records for it, and no recorded URL is https while a member runs without its peer
certificate."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest

from overlayctl.errors import OverlayctlError
from overlayctl.etcd import peer_tls, peer_tls_drive
from overlayctl.etcd.peer_tls import Kind, MemberView, Ports, Stage, choose_ports, next_step

T = 2382
P = Ports(2380, T)
ADDR = {"node1": "10.0.0.1", "node2": "10.0.0.2", "node3": "10.0.0.3"}
HTTP, TMP, TLS = "http:2380", f"https:{T}", "https:2380"  # what the membership records


def peers(stage: Stage | None, name: str, temp: int = T) -> str | None:
    """ETCD_LISTEN_PEER_URLS of STAGE on NAME's address."""
    if stage is None:
        return None
    return ",".join(f"{s}://{ADDR[name]}:{p}" for s, p in sorted(stage.serves(Ports(2380, temp))))


def view(
    name: str, recorded: str, file: Stage | None, running: Stage | None, **kw: object
) -> MemberView:
    scheme, port = recorded.split(":")
    return MemberView(
        id=f"{list(ADDR).index(name) + 0xA1:x}", name=name, address=ADDR[name],
        peer_urls=(f"{scheme}://{ADDR[name]}:{port}",), file_peers=peers(file, name),
        running_peers=peers(running, name), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def cluster(*members: tuple[str, Stage | None, Stage | None]) -> list[MemberView]:
    """(recorded, file, running) per member, node1 first."""
    return [view(f"node{i + 1}", *m) for i, m in enumerate(members)]


H, D, TT, F = Stage.HTTP, Stage.DUAL, Stage.TLS_TEMP, Stage.TLS


# -- each partial state --------------------------------------------------------------------------


def test_hand_built_cluster_starts_r1_on_the_first_member() -> None:
    step = next_step(cluster((HTTP, H, H), (HTTP, H, H)), P)
    assert (step.kind, step.round, step.member, step.stage, step.write) == (
        Kind.ROLL, "R1", "node1", D, True,
    )  # fmt: skip
    assert step.describe() == "R1: node1: etcd.conf peers_dual, restart"


def test_after_r1_on_one_member_the_next_member_rolls_no_update_yet() -> None:
    step = next_step(cluster((HTTP, D, D), (HTTP, H, H), (HTTP, H, H)), P)
    assert (step.kind, step.member, step.stage) == (Kind.ROLL, "node2", D)


def test_file_written_but_not_restarted_is_restarted_without_a_write() -> None:
    step = next_step(cluster((HTTP, D, D), (HTTP, D, H)), P)
    assert (step.kind, step.member, step.stage, step.write) == (Kind.ROLL, "node2", D, False)
    assert step.describe() == "R1: node2: restart (peers_dual)"


def test_u1_starts_only_when_every_member_runs_dual() -> None:
    step = next_step(cluster((HTTP, D, D), (HTTP, D, D)), P)
    assert (step.kind, step.round, step.member) == (Kind.UPDATE, "U1", "node1")
    assert step.url == f"https://10.0.0.1:{T}" and step.member_id == "a1"


def test_after_u1_on_some_members_the_rest_are_updated() -> None:
    step = next_step(cluster((TMP, D, D), (HTTP, D, D), (HTTP, D, D)), P)
    assert (step.kind, step.round, step.member) == (Kind.UPDATE, "U1", "node2")


def test_after_u1_r2_rolls_each_member_to_tls_temp() -> None:
    step = next_step(cluster((TMP, D, D), (TMP, D, D)), P)
    assert (step.kind, step.round, step.member, step.stage, step.write) == (
        Kind.ROLL, "R2", "node1", TT, True,
    )  # fmt: skip
    step = next_step(cluster((TMP, TT, TT), (TMP, D, D)), P)
    assert (step.kind, step.member, step.stage) == (Kind.ROLL, "node2", TT)


def test_after_r2_u2_moves_each_member_to_https_2380() -> None:
    step = next_step(cluster((TMP, TT, TT), (TMP, TT, TT)), P)
    assert (step.kind, step.round, step.url) == (Kind.UPDATE, "U2", "https://10.0.0.1:2380")
    step = next_step(cluster((TLS, TT, TT), (TMP, TT, TT)), P)
    assert (step.kind, step.member) == (Kind.UPDATE, "node2")


def test_after_u2_it_is_done_and_r3_files_count_as_done() -> None:
    assert next_step(cluster((TLS, TT, TT), (TLS, TT, TT)), P).kind is Kind.DONE
    assert next_step(cluster((TLS, F, F), (TLS, F, F)), P).kind is Kind.DONE
    assert next_step(cluster((TLS, F, F), (TLS, TT, TT)), P).kind is Kind.DONE


def test_a_member_down_is_repaired_first_into_a_stage_that_serves_its_urls() -> None:
    step = next_step(cluster((TMP, D, D), (TMP, D, None)), P)
    assert (step.kind, step.round, step.member, step.stage, step.write) == (
        Kind.ROLL, "repair", "node2", D, False,
    )  # fmt: skip
    # Down in R2 with a file of R2 already: started as R2's stage.
    step = next_step(cluster((TMP, TT, TT), (TMP, TT, None)), P)
    assert (step.member, step.stage, step.write) == ("node2", TT, False)


def test_a_member_still_on_http_while_a_url_is_https_is_restarted_with_its_certificate() -> None:
    # e.g. node2 restored by hand to the runbook's file after U1 on node1
    step = next_step(cluster((TMP, D, D), (HTTP, H, H)), P)
    assert (step.kind, step.round, step.member, step.stage) == (Kind.ROLL, "repair", "node2", D)


def test_a_file_that_would_break_the_invariant_at_a_reboot_is_rewritten_without_restart() -> None:
    # node2 runs dual but its file already says R2 while the membership records http:2380:
    # rebooted, it would drop http:2380.
    step = next_step(cluster((HTTP, D, D), (HTTP, TT, D)), P)
    assert (step.kind, step.member, step.stage, step.write) == (Kind.FILE, "node2", D, True)


def test_a_member_that_cannot_be_reached_blocks() -> None:
    views = cluster((HTTP, H, H), (HTTP, H, H))
    views[1] = replace(views[1], reachable=False)
    step = next_step(views, P)
    assert step.kind is Kind.BLOCKED and "node2 cannot be reached" in step.reason


def test_a_missing_peer_certificate_blocks_before_any_restart() -> None:
    views = cluster((HTTP, H, H), (HTTP, H, H))
    views[0] = replace(views[0], peer_cert=False)
    step = next_step(views, P)
    assert step.kind is Kind.BLOCKED and "peer certificate" in step.reason


def test_unknown_urls_or_listeners_block() -> None:
    views = cluster((HTTP, H, H), (HTTP, H, H))
    odd = replace(views[1], peer_urls=("http://10.0.0.2:7001",))
    assert next_step([views[0], odd], P).kind is Kind.BLOCKED
    odd = replace(views[1], running_peers="http://10.0.0.2:2380,http://10.0.0.2:7001")
    assert next_step([views[0], odd], P).kind is Kind.BLOCKED


def test_temporary_port_2382_unless_taken_and_an_earlier_runs_port_kept() -> None:
    views = cluster((HTTP, H, H), (HTTP, H, H))
    assert choose_ports(views) == Ports(2380, 2382)
    views[1] = replace(views[1], taken_ports=frozenset({2382, 2383}))
    assert choose_ports(views) == Ports(2380, 2384)
    resumed = cluster((HTTP, H, H), (HTTP, H, H))
    resumed[0] = replace(resumed[0], running_peers="http://10.0.0.1:2380,https://10.0.0.1:2390")
    assert choose_ports(resumed).temp == 2390


# -- a simulated cluster: every path keeps the invariant ---------------------------------------


@dataclass
class Sim:
    recorded: dict[str, str]
    file: dict[str, Stage | None]
    running: dict[str, Stage | None]

    def views(self) -> list[MemberView]:
        return [view(n, self.recorded[n], self.file[n], self.running[n]) for n in self.recorded]

    def invariant(self) -> bool:
        any_https = any(r.startswith("https") for r in self.recorded.values())
        for name, rec in self.recorded.items():
            stage = self.running[name]
            scheme, port = rec.split(":")
            if stage is None or (scheme, int(port)) not in stage.serves(P):
                return False
            if any_https and not stage.has_peer_tls:
                return False
        return True

    def apply(self, step: peer_tls.Step, check: bool) -> None:
        """STEP, checking the invariant after each of its parts (a cut may come between)."""
        name = step.member
        if step.kind is Kind.UPDATE:
            self.recorded[name] = step.url.replace(f"{ADDR[name]}:", "").replace("//", "")
        else:
            if step.write:
                self.file[name] = step.stage
                assert not check or self.invariant()
            if step.kind is Kind.ROLL:
                self.running[name] = self.file[name]
        assert not check or self.invariant(), step.describe()


def run(sim: Sim, check: bool, limit: int = 40) -> list[peer_tls.Step]:
    steps = []
    for _ in range(limit):
        step = next_step(sim.views(), P)
        if step.kind in (Kind.DONE, Kind.BLOCKED):
            steps.append(step)
            return steps
        sim.apply(step, check)
        steps.append(step)
    raise AssertionError(f"no end after {limit} steps: {[s.describe() for s in steps]}")


@pytest.mark.parametrize("members", [2, 3])
def test_a_full_run_has_the_four_rounds_in_order_and_ends_on_https(members: int) -> None:
    names = list(ADDR)[:members]
    sim = Sim(dict.fromkeys(names, HTTP), dict.fromkeys(names, H), dict.fromkeys(names, H))
    steps = run(sim, check=True)
    assert steps[-1].kind is Kind.DONE
    rounds = [s.round for s in steps[:-1]]
    assert rounds == ["R1"] * members + ["U1"] * members + ["R2"] * members + ["U2"] * members
    assert set(sim.recorded.values()) == {TLS} and set(sim.running.values()) == {TT}


@pytest.mark.parametrize("members", [2, 3])
def test_cut_after_any_part_of_any_step_resumes_to_the_end(members: int) -> None:
    """A run cut after each step, and between a step's write and its restart, then resumed
    from what it finds, ends as the uncut one, with the invariant held all along."""
    names = list(ADDR)[:members]
    start = Sim(dict.fromkeys(names, HTTP), dict.fromkeys(names, H), dict.fromkeys(names, H))
    full = run(Sim(dict(start.recorded), dict(start.file), dict(start.running)), check=True)
    for cut in range(len(full) - 1):
        for half in (False, True):
            sim = Sim(dict(start.recorded), dict(start.file), dict(start.running))
            for step in full[:cut]:
                sim.apply(step, check=True)
            if half and full[cut].write:  # written, not restarted
                sim.file[full[cut].member] = full[cut].stage
            assert run(sim, check=True)[-1].kind is Kind.DONE
            assert set(sim.recorded.values()) == {TLS}


def sim_of(state: dict[str, tuple[str, Stage | None, Stage | None]]) -> Sim:
    """(recorded, file, running) per member name."""
    return Sim({n: s[0] for n, s in state.items()}, {n: s[1] for n, s in state.items()},
               {n: s[2] for n, s in state.items()})  # fmt: skip


def _every_state(names: list[str]) -> itertools.product:
    per = itertools.product((HTTP, TMP, TLS), (H, D, TT, F), (H, D, TT, F, None))
    return itertools.product(per, repeat=len(names))


def test_from_every_state_of_two_members_it_ends_and_never_breaks_a_held_invariant() -> None:
    names = ["node1", "node2"]
    ends = {Kind.DONE: 0, Kind.BLOCKED: 0}
    for state in _every_state(names):
        sim = sim_of(dict(zip(names, state, strict=True)))
        steps = run(sim, check=sim.invariant())  # once held, every later state holds it too
        ends[steps[-1].kind] += 1
        assert steps[-1].kind is Kind.DONE, (state, [s.describe() for s in steps])
        assert sim.invariant() and set(sim.recorded.values()) == {TLS}
    assert ends[Kind.BLOCKED] == 0 and ends[Kind.DONE] == (3 * 4 * 5) ** 2


def test_no_update_while_a_member_lacks_peer_tls_or_does_not_serve_the_new_url() -> None:
    names = ["node1", "node2", "node3"]
    per = itertools.product((HTTP, TMP, TLS), (H, D, TT, F, None))  # its file as what runs
    for state in itertools.product(((r, s, s) for r, s in per), repeat=3):
        views = [view(n, *s) for n, s in zip(names, state, strict=True)]
        step = next_step(views, P)
        if step.kind is not Kind.UPDATE:
            continue
        assert all(Stage(s[2]).has_peer_tls for s in state if s[2] is not None)
        assert all(s[2] is not None for s in state)
        member = next(s for n, s in zip(names, state, strict=True) if n == step.member)
        scheme, _, port = step.url.replace("//", "").partition(f"{ADDR[step.member]}:")
        assert (scheme.rstrip(":"), int(port)) in member[2].serves(P)


# -- drive(): the loop over an executor --------------------------------------------------------


class FakeExecutor:
    """The simulated cluster behind peer_tls_drive.Executor; FAIL_ON: (member, stage) restarts that
    never become healthy."""

    def __init__(self, sim: Sim, fail_on: tuple[str, Stage] | None = None) -> None:
        self.sim, self.fail_on, self.lines, self.rolled_back = sim, fail_on, [], []
        self._before: dict[str, Stage | None] = {}
        self.cut_off: list[str] = []  # members that cannot connect to a new URL
        self.ignores_file = ""  # a member whose etcd does not read its etcd.conf

    def observe(self) -> list[MemberView]:
        return self.sim.views()

    def write(self, member: str, stage: Stage, ports: Ports) -> None:
        self._before[member] = self.sim.file[member]
        self.sim.file[member] = stage

    def restart(self, member: str) -> None:
        if member != self.ignores_file:
            self.sim.running[member] = self.sim.file[member]

    def unreachable(self, url: str, member: str) -> list[str]:
        return self.cut_off

    def wait_healthy(self, member: str) -> float:
        if self.fail_on == (member, self.sim.running[member]):
            raise OverlayctlError("etcd not healthy after 5 s")
        return 0.1

    def rollback(self, v: MemberView, ports: Ports) -> None:
        self.rolled_back.append(v.name)
        self.sim.file[v.name] = self._before.get(v.name, self.sim.file[v.name])
        self.sim.running[v.name] = self.sim.file[v.name]

    def update(self, member_id: str, url: str) -> None:
        name = next(v.name for v in self.sim.views() if v.id == member_id)
        self.sim.recorded[name] = url.replace(f"{ADDR[name]}:", "").replace("//", "")

    def say(self, line: str) -> None:
        self.lines.append(line)


def fresh(n: int) -> Sim:
    names = list(ADDR)[:n]
    return Sim(dict.fromkeys(names, HTTP), dict.fromkeys(names, H), dict.fromkeys(names, H))


def test_drive_runs_every_round_and_times_them() -> None:
    ex = FakeExecutor(fresh(2))
    done = peer_tls_drive.drive(ex)
    assert set(done.by_round()) == {"R1", "U1", "R2", "U2"}
    assert ex.lines[0] == "R1: node1: etcd.conf peers_dual, restart"
    assert ex.lines[-1] == "U2: node2: member update a2 --peer-urls=https://10.0.0.2:2380"
    assert peer_tls_drive.drive(ex).steps == []  # a re-run: nothing to do


def test_a_failed_restart_puts_the_previous_file_back_and_stops_the_roll() -> None:
    ex = FakeExecutor(fresh(3), fail_on=("node2", D))
    with pytest.raises(OverlayctlError, match="node2: etcd did not come back as peers_dual"):
        peer_tls_drive.drive(ex)
    assert ex.rolled_back == ["node2"]
    assert ex.sim.file == {"node1": D, "node2": H, "node3": H}  # node3 never touched
    assert ex.sim.running == {"node1": D, "node2": H, "node3": H}
    assert ex.sim.invariant()


def test_blocked_raises_with_the_reason() -> None:
    sim = fresh(2)
    ex = FakeExecutor(sim)
    ex.observe = lambda: [replace(v, peer_cert=False) for v in sim.views()]  # type: ignore[method-assign]
    with pytest.raises(OverlayctlError, match="peer certificate is not on the host"):
        peer_tls_drive.drive(ex)


def test_an_update_waits_for_every_member_to_reach_the_new_url() -> None:
    ex = FakeExecutor(fresh(2))
    ex.cut_off = ["node2"]
    with pytest.raises(OverlayctlError, match=r"node2 cannot connect to https://10.0.0.1:2382"):
        peer_tls_drive.drive(ex)
    assert set(ex.sim.recorded.values()) == {HTTP}  # no member update was made
    assert ex.sim.invariant()
    ex.cut_off = []
    assert peer_tls_drive.drive(ex).steps and set(ex.sim.recorded.values()) == {TLS}


def test_an_etcd_that_ignores_its_file_is_rolled_back_not_restarted_forever() -> None:
    ex = FakeExecutor(fresh(2))
    ex.ignores_file = "node1"
    with pytest.raises(OverlayctlError, match=r"not what its etcd\.conf says"):
        peer_tls_drive.drive(ex)
    assert ex.rolled_back == ["node1"] and ex.sim.file["node1"] is H
