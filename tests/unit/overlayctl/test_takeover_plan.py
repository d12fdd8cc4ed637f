"""adopt's TakeOver on one host (overlayctl/plan/takeover.py): takeover-state.sh's output as a
lab host printed it (the runbook's node2: flanneld enabled with RequiredBy=docker, docker by a
hand-made override.conf), and what is left to do from every state a cut run can leave."""

from __future__ import annotations

import base64
from pathlib import Path

from overlayctl import paths as hp
from overlayctl.plan import docker_takeover as dt
from overlayctl.plan import takeover as tk
from overlayctl.plan.render import render_host
from tests.unit.overlayctl.test_docker_takeover import OVERRIDE, ours, runbook

FIXTURE = Path(__file__).parent / "fixtures" / "takeover-state-node2.txt"
NODE2 = FIXTURE.read_text()
SUBNET = "172.21.5.0/24"
ADDRESS = "192.168.255.155"


def state(text: str = NODE2, **swap: str) -> tk.HostState:
    for old, new in swap.items():
        assert old in text, old
        text = text.replace(old, new)
    return tk.parse_state(text)


def taken_over() -> str:
    """node2 once TakeOver is done: flanneld masked and stopped, the agent ready on the same
    lease, docker's only drop-in ours (dockerd kept running: same PID, same flags)."""
    text = NODE2.replace(
        "unit=flanneld ActiveState=active FragmentPath=/etc/systemd/system/flanneld.service "
        "LoadState=loaded UnitFileState=enabled",
        "unit=flanneld ActiveState=inactive FragmentPath= LoadState=masked UnitFileState=masked",
    ).replace(
        "unit=overlay-agent ActiveState=inactive FragmentPath= LoadState=not-found UnitFileState=",
        f"unit=overlay-agent ActiveState=active FragmentPath={hp.AGENT_UNIT} LoadState=loaded "
        "UnitFileState=enabled\nagent_ready=yes",
    )
    mine = ours()
    argv = " ".join(mine.exec_start)
    text = text.replace("argv[]=/usr/sbin/dockerd -H fd:// --bip=172.21.5.1/24 --mtu 1472",
                        f"argv[]={argv}").replace(OVERRIDE, hp.DOCKER_DROPIN)  # fmt: skip
    text = text.replace(" flanneld.service\n", "\n")
    dropin = base64.b64encode((mine.dropin_text or "").encode()).decode()
    lines = [ln for ln in text.splitlines() if not ln.startswith(f"file={hp.DOCKER_DROPIN}")]
    return "\n".join([*lines, f"file={hp.DOCKER_DROPIN} {dropin}"]) + "\n"


def test_the_state_as_a_lab_host_printed_it() -> None:
    got = state()
    assert got.flanneld == tk.UnitInfo("loaded", "active", "enabled",
                                       "/etc/systemd/system/flanneld.service")  # fmt: skip
    assert got.flanneld.present and got.flanneld.running and not got.flanneld.masked
    assert not got.agent.present and not got.agent_ready
    assert got.lease == "172.21.5.1/24" and got.subnet == SUBNET
    assert got.want == "--bip=172.21.5.1/24 --ip-masq=true --mtu=1472"
    assert got.running == ("/usr/sbin/dockerd", "-H", "fd://", "--bip=172.21.5.1/24", "--mtu",
                           "1472")  # fmt: skip
    assert got.docker.binds() == ["Requires"] and got.docker.dropins == (OVERRIDE,)
    assert got.files[OVERRIDE] is not None and "ExecStart=\n" in got.files[OVERRIDE]
    assert got.files["/etc/docker/daemon.json"] is None
    assert got.docker0 == "172.21.5.1/24"


def test_a_hand_built_host_gets_every_step_and_docker_no_restart() -> None:
    plan = tk.plan_takeover(state(), SUBNET, ours(), ADDRESS)
    assert plan.refusals == ()
    assert plan.steps() == [
        "disable and mask flanneld",
        "stop flanneld",
        "start overlay-agent on the imported lease",
        "write overlayctl's docker drop-in",
        f"back up and remove {OVERRIDE}",
        "docker keeps running (its flags are the agent's)",
    ]


def test_a_cut_run_resumes_where_it_stopped() -> None:
    # flanneld disabled, masked and stopped, but no agent: the agent starts
    masked = {
        "ActiveState=active FragmentPath=/etc/systemd/system/flanneld.service LoadState=loaded "
        "UnitFileState=enabled": "ActiveState=inactive LoadState=masked UnitFileState=masked"
    }
    plan = tk.plan_takeover(state(**masked), SUBNET, ours(), ADDRESS)
    assert not plan.flanneld_off and not plan.stop_flanneld and plan.start_agent
    # masked but still running, the agent up beside it: flanneld stops, the agent restarts
    both = {"UnitFileState=enabled": "UnitFileState=masked",
            "unit=overlay-agent ActiveState=inactive": "unit=overlay-agent ActiveState=active"
            " LoadState=loaded agent_ready=yes"}  # fmt: skip
    plan = tk.plan_takeover(state(**both), SUBNET, ours(), ADDRESS)
    assert not plan.flanneld_off and plan.stop_flanneld and plan.start_agent
    # everything done: nothing left
    done = tk.parse_state(taken_over())
    assert done.agent_ready and done.docker.binds() == []
    plan = tk.plan_takeover(done, SUBNET, ours(), ADDRESS)
    assert plan.steps() == [] and plan.refusals == (), plan
    # the same, but systemd was not reloaded after the files changed
    stale = tk.parse_state(taken_over().replace("NeedDaemonReload=no", "NeedDaemonReload=yes"))
    assert tk.plan_takeover(stale, SUBNET, ours(), ADDRESS).steps()[-1].startswith("docker keeps")


def test_refusals_name_what_is_wrong() -> None:
    plan = tk.plan_takeover(state(), None, ours(), ADDRESS)
    assert plan.refusals == (f"no lease of {ADDRESS} in etcd's v3 key space: import the v2 "
                             "leases first (adopt's ImportV2), then re-run",)  # fmt: skip
    done = tk.parse_state(taken_over())
    plan = tk.plan_takeover(done, "172.21.99.0/24", ours(), ADDRESS)
    assert plan.refusals == ("overlay-agent runs on 172.21.5.0/24, not on the imported "
                             "172.21.99.0/24: stop it, then re-run",)  # fmt: skip


def test_a_host_without_flanneld_is_not_taken_over() -> None:
    bare = NODE2.replace("LoadState=loaded", "LoadState=not-found")
    assert tk.plan_takeover(tk.parse_state(bare), None, ours(), ADDRESS) == tk.TakeoverPlan()


def test_leftover_devices() -> None:
    got = tk.parse_state("link=flannel0 \nlink=flannel1 812 \nlink=flannel.1 \n")
    assert got.links == {"flannel0": (), "flannel1": (812,), "flannel.1": ()}
    assert tk.leftover_devices(got, "udp") == (["flannel.1", "flannel0"], ["flannel1"])
    assert tk.leftover_devices(got, "vxlan") == (["flannel0"], ["flannel1"])


def test_execstart_mode_is_judged_by_its_flags() -> None:
    inv = runbook()
    text = render_host(inv, inv.hosts[1])[hp.DOCKER_DROPIN].content.decode()
    assert "ExecStart=" in text  # (the drop-in mode's text; execstart has none)
    execstart = dt.Ours("", None, hp.DOCKER_OPTS_ENV, ())
    done = tk.parse_state(taken_over().replace(" ".join(ours().exec_start),
                                               "/usr/sbin/dockerd -H fd:// --bip=172.21.5.1/24"
                                               " --ip-masq=true --mtu=1472"))  # fmt: skip
    assert tk.plan_takeover(done, SUBNET, execstart, ADDRESS).unit_problems == ()
