"""adopt's TakeOver, docker's side (overlayctl/plan/docker_takeover.py): from `systemctl show
docker`, the unit files and dockerd's argv, which hand edits go, which are refused by name, and
whether docker restarts (the runbook's case: it must not)."""

from __future__ import annotations

from pathlib import Path

from overlayctl import paths as hp
from overlayctl.inventory import Inventory, parse_inventory
from overlayctl.phases.docker import docker_runs_on
from overlayctl.plan import docker_takeover as dt
from overlayctl.plan.facts import env_settings
from overlayctl.plan.render import render_host

DROPIN = hp.DOCKER_DROPIN
OVERRIDE = "/etc/systemd/system/docker.service.d/override.conf"
RPM_FLANNEL = "/usr/lib/systemd/system/docker.service.d/flannel.conf"
VENDOR = "/lib/systemd/system/docker.service"
WANT = "--bip=172.21.31.1/24 --ip-masq=true --mtu=1472"
# Debian's docker.io unit as the lab template has it, edited as the runbook says (node1).
VENDOR_TEXT = """[Unit]
Description=Docker Application Container Engine
Requires=docker.socket

[Service]
Type=notify
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS
ExecReload=/bin/kill -s HUP $MAINPID
"""
EDITED_TEXT = VENDOR_TEXT.replace("$DOCKER_OPTS", "$DOCKER_OPTS " + WANT)
RUNNING = ["/usr/sbin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock",
           *WANT.split()]  # fmt: skip
# What systemd 252 printed on a lab host for a drop-in made by hand (`systemctl edit docker`).
SHOW = """MainPID=0
ExecStart={ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// --bip=172.21.5.1/24 --mtu 1472 ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
EnvironmentFiles=/etc/default/docker (ignore_errors=yes)
EnvironmentFiles=/run/flannel/docker (ignore_errors=yes)
Requires=system.slice sysinit.target docker.socket flanneld.service
BindsTo=
PartOf=
FragmentPath=/lib/systemd/system/docker.service
DropInPaths=/etc/systemd/system/docker.service.d/override.conf
"""  # noqa: E501


def runbook() -> Inventory:
    """The runbook's two hosts, both etcd members and nodes."""
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian", "backend": "udp"},
        "ssh": {"user": "root"},
        "hosts": [{"name": "node1", "address": "192.168.255.154"},
                  {"name": "node2", "address": "192.168.255.155"}],
    }  # fmt: skip
    return parse_inventory(doc, Path("/nonexistent"))[0]


def ours() -> dt.Ours:
    inv = runbook()
    host = inv.hosts[0]
    text = render_host(inv, host)[DROPIN].content.decode()
    return dt.ours_from_dropin(DROPIN, text, hp.DOCKER_OPTS_ENV)


def show(dropins: list[str], argv: str, pid: int = 1234) -> dt.DockerUnit:
    return dt.parse_show(
        f"MainPID={pid}\nExecStart={{ path=x ; argv[]={argv} ; ignore_errors=no ; pid=0 }}\n"
        f"EnvironmentFiles=/run/flannel/docker (ignore_errors=yes)\n"
        f"FragmentPath={VENDOR}\nDropInPaths={' '.join(dropins)}\n"
    )


def test_show_as_systemd_prints_it() -> None:
    unit = dt.parse_show(SHOW)
    assert unit.fragment == VENDOR and unit.dropins == (OVERRIDE,)
    assert unit.exec_start == ("/usr/sbin/dockerd", "-H", "fd://", "--bip=172.21.5.1/24",
                               "--mtu", "1472")  # fmt: skip
    assert unit.env_files == ("/etc/default/docker", "/run/flannel/docker")
    assert unit.binds() == ["Requires"]  # stopping flanneld would stop docker
    assert unit.main_pid == 0
    assert dt.parse_show(SHOW.replace(" flanneld.service", "")).binds() == []
    assert dt.parse_show("BindsTo=flanneld.service\nPartOf=flanneld.service\n").binds() == [
        "BindsTo", "PartOf",
    ]  # fmt: skip


def test_flags_compare_in_every_spelling_with_dockerd_defaults() -> None:
    assert dt.network_flags(["dockerd", "--mtu", "1472", "--bip=10.0.0.1/24", "--ip-masq"]) == {
        "--bip": "10.0.0.1/24", "--ip-masq": "true", "--mtu": "1472",
    }  # fmt: skip
    assert dt.flag_changes(RUNNING, WANT.split()) == []
    # --ip-masq=true is dockerd's default: absent and explicit are the same
    assert dt.flag_changes(["dockerd", "--bip=172.21.31.1/24", "--mtu=1472"], WANT.split()) == []
    assert dt.flag_changes(RUNNING, WANT.replace("true", "false").split()) == [
        "--ip-masq true -> false"
    ]
    assert dt.flag_changes(["dockerd"], WANT.split()) == [
        "--bip (none) -> 172.21.31.1/24", "--mtu 1500 -> 1472",
    ]  # fmt: skip
    assert dt.flag_pairs(["dockerd", "-H", "fd://", "--host=unix:///x", "--debug"]) == [
        ("--host", "fd://"), ("--host", "unix:///x"), ("--debug", "true"),
    ]  # fmt: skip


def test_the_runbooks_vendor_edit_goes_and_docker_keeps_running() -> None:
    """node1: flags edited into the vendor unit, no drop-in; dockerd runs with what the agent
    writes: the flags leave the unit, docker does not restart."""
    got = dt.decide(show([DROPIN], " ".join(RUNNING)), {VENDOR: EDITED_TEXT}, RUNNING, WANT,
                    ours(), docker0="172.21.31.1/24", lease="172.21.31.1/24")  # fmt: skip
    assert got.refusals == () and got.remove == ()
    assert got.strip == VENDOR and got.stripped == VENDOR_TEXT  # byte for byte the original
    assert got.restart == () and not got.start
    assert got.describe()[-1] == "docker keeps running (its flags are the agent's)"
    # A second look after the change: nothing left to do.
    again = dt.decide(show([DROPIN], " ".join(RUNNING)), {VENDOR: VENDOR_TEXT}, RUNNING, WANT,
                      ours())  # fmt: skip
    assert not again.unit_changes and again.restart == ()


def test_an_override_made_by_systemctl_edit_is_removed() -> None:
    """node2: `systemctl edit docker` (override.conf sorts after ours and would win)."""
    text = "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// " + WANT + "\n"
    text += "EnvironmentFile=-/etc/sysconfig/docker-network\n[Unit]\nAfter=flanneld.service\n"
    text += "Requires=flanneld.service\n"
    got = dt.decide(show([DROPIN, OVERRIDE], " ".join(RUNNING)), {OVERRIDE: text, VENDOR:
                    VENDOR_TEXT}, RUNNING, WANT, ours())  # fmt: skip
    assert got.remove == (OVERRIDE,) and got.refusals == () and got.strip == ""
    assert got.describe()[0] == f"back up and remove {OVERRIDE}"
    # flannel's RPM drop-in reads the same file as ours: kept
    rpm = "[Service]\nEnvironmentFile=-/run/flannel/docker\n"
    got = dt.decide(show([RPM_FLANNEL, DROPIN], " ".join(RUNNING)), {RPM_FLANNEL: rpm}, RUNNING,
                    WANT, ours())  # fmt: skip
    assert got.keep == (RPM_FLANNEL,) and got.remove == ()


def test_a_dropin_with_other_settings_is_refused_by_name() -> None:
    text = "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd " + WANT + "\nLimitNOFILE=4096\n"
    text += "[Unit]\nRequires=flanneld.service containerd.service\n"
    got = dt.decide(show([OVERRIDE], " ".join(RUNNING)), {OVERRIDE: text}, RUNNING, WANT, ours())
    (why,) = got.refusals
    assert why.startswith(f"{OVERRIDE} sets LimitNOFILE, Requires besides ExecStart:"), why
    assert got.remove == ()
    # Settings that are not ours at all: the drop-in stays
    limits = "[Service]\nLimitNOFILE=4096\n"
    got = dt.decide(show([DROPIN, OVERRIDE], ""), {OVERRIDE: limits}, [], WANT, ours())
    assert got.keep == (OVERRIDE,) and got.refusals == () and got.start


def test_flags_docker_would_lose_are_refused() -> None:
    running = [*RUNNING, "--insecure-registry", "10.1.1.1:5000"]
    got = dt.decide(show([DROPIN], ""), {}, running, WANT, ours())
    (why,) = got.refusals
    assert "--insecure-registry=10.1.1.1:5000" in why and "daemon.json" in why


def test_a_flag_change_restarts_docker_and_says_why() -> None:
    got = dt.decide(show([DROPIN], ""), {}, RUNNING, WANT.replace("1472", "1450"), ours(),
                    docker0="172.21.9.1/24", lease="172.21.31.1/24")  # fmt: skip
    assert got.restart == ("--mtu 1472 -> 1450", "docker0 172.21.9.1/24 -> 172.21.31.1/24")
    assert got.describe() == ["restart docker: --mtu 1472 -> 1450, docker0 172.21.9.1/24 -> "
                              "172.21.31.1/24"]  # fmt: skip


def test_strip_keeps_everything_but_the_network_flags() -> None:
    text = ("# hand edit\nExecStart=/usr/bin/dockerd -H fd:// \\\n  --bip=10.0.0.1/24 --mtu 1472 "
            "\\\n  --ip-masq=true --debug\nExecStartPost=/bin/true --mtu=1\n")  # fmt: skip
    assert dt.strip_network_flags(text) == (
        "# hand edit\nExecStart=/usr/bin/dockerd -H fd:// \\\n \\\n --debug\n"
        "ExecStartPost=/bin/true --mtu=1\n"
    )
    assert dt.strip_network_flags(VENDOR_TEXT) == VENDOR_TEXT


def test_effective_unit_must_be_ours() -> None:
    mine = ours()
    good = show([DROPIN], " ".join(mine.exec_start))
    assert dt.effective_problems(good, mine, WANT) == []
    bad = show([DROPIN, OVERRIDE], "/usr/sbin/dockerd -H fd:// --bip=172.21.5.1/24")
    (problem,) = dt.effective_problems(bad, mine, WANT)
    assert f"(from {OVERRIDE}), not ours" in problem
    missing = dt.parse_show(SHOW)
    assert len(dt.effective_problems(missing, mine, WANT)) == 2
    # docker.mode execstart: docker's own unit holds the flags literally
    execstart = dt.Ours("", None, hp.DOCKER_OPTS_ENV, ())
    assert dt.effective_problems(show([], " ".join(RUNNING)), execstart, WANT) == []
    assert dt.effective_problems(show([], "/usr/sbin/dockerd"), execstart, WANT) != []


def test_env_values() -> None:
    """mk-docker-opts' file as the one env parser reads it (plan/facts.env_settings)."""
    text = 'DOCKER_OPT_BIP="--bip=1.2.3.1/24"\nDOCKER_NETWORK_OPTIONS=" --bip=1.2.3.1/24 --mtu=1"\n'
    assert env_settings(text + "# c\n") == {
        "DOCKER_OPT_BIP": "--bip=1.2.3.1/24", "DOCKER_NETWORK_OPTIONS": " --bip=1.2.3.1/24 --mtu=1",
    }  # fmt: skip


def test_the_docker_phase_compares_values_not_spellings() -> None:
    """init's Docker phase after adopt: dockerd started by hand with `--mtu 1472` runs with the
    agent's `--mtu=1472` (a restart would stop every container for nothing)."""
    lease = "172.21.31.1/24"
    state = (f"docker0={lease}\nwant= {WANT}\narg=/usr/bin/dockerd\narg=--bip\narg={lease}\n"
             "arg=--mtu\narg=1472\n")  # fmt: skip
    assert docker_runs_on(state, lease)
    assert not docker_runs_on(state.replace("arg=1472", "arg=1500"), lease)
