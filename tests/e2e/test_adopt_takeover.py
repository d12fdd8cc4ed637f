"""adopt's TakeOver on the hand-built runbook cluster (tests/e2e/handbuilt.py), through the
engine with ImportV2 before it (tests/e2e/takeover_driver.py), host by host: node1 (the RPM's
flanneld unit, docker's vendor unit edited in place) while node2 keeps flanneld, so the mixed
roll is tested for real (agent and flanneld talk udp on 8285); then node2 (a hand-written
flanneld with RequiredBy=docker.service, docker's override.conf). Every host keeps its subnet,
every container its ID, StartedAt and address, and dockerd its PID (the runbook's case needs no
docker restart). Then a re-run does nothing, and one after the agent stopped starts it again.
Destructive: its own 2-host lab."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.e2e.takeover_tools import assert_pings, dockerd_pid, probe_gap, start_probe, takeover
from tests.labtools import cli, full_lab, on

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
NAMES = ["node1", "node2"]
BACKUP = "/var/lib/overlayctl/backup"
SHOW = "systemctl show docker -p DropInPaths -p ExecStart -p EnvironmentFiles -p Requires"


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[state.LabState, hb.HandBuilt, Path]]:
    with full_lab(2, "tko") as lab:
        cluster = hb.build(lab, NAMES)
        cli(lab, "--version")  # builds the installed venv the driver runs in
        yield lab, cluster, hb.inventory(lab, NAMES, tls=False)


def assert_taken_over(lab: state.LabState, cluster: hb.HandBuilt, host: str) -> None:
    """HOST runs the agent on its old subnet, flanneld is gone for good, docker's unit is ours
    and its containers are the same ones."""
    was = cluster.hosts[host]
    gateway = was.subnet.replace(".0/24", ".1/24")
    assert f"FLANNEL_SUBNET={gateway}\n" in hb.run(lab, host, f"cat {hp.SUBNET_ENV}")
    assert hb.run(lab, host, "systemctl is-active overlay-agent").strip() == "active"
    assert on(lab, host, "systemctl is-active flanneld").stdout.strip() == "inactive"
    assert on(lab, host, "systemctl is-enabled flanneld").stdout.strip() == "masked"
    links = hb.run(lab, host, "ip -o link show")
    assert " flannel0:" in links and " flannel1:" not in links, links
    assert "persist on" in hb.run(lab, host, "ip -d link show flannel0")  # the agent's own
    show = hb.run(lab, host, SHOW)
    dropins = show.split("DropInPaths=")[1].split("\n")[0].split()
    assert hp.DOCKER_DROPIN in dropins, show
    assert set(dropins) <= {hp.DOCKER_DROPIN, hb.files.RPM_DOCKER_DROPIN}, show
    assert "$DOCKER_NETWORK_OPTIONS" in show and "--bip" not in show, show
    assert "flanneld.service" not in show.split("Requires=")[1].split("\n")[0], show
    assert hb.containers(lab, host) == was.containers  # same IDs, StartedAt and addresses
    assert hb.run(lab, host, "ip -4 -o addr show docker0").split()[3] == was.docker0


def v2_ttl(lab: state.LabState, key: str) -> int:
    doc = json.loads(hb.run(lab, "node2", f"{hb.ETCDCTL2} -o json get {key}"))
    return int((doc.get("node") or doc)["ttl"])


# Holds the agent's health port on 127.0.0.1: the agent exits before it is ready.
SQUAT = (
    f"systemd-run --unit=squat-healthz python3 -c 'import socket, time; s = socket.socket();"
    f' s.bind(("127.0.0.1", {hp.AGENT_HEALTHZ_PORT})); s.listen(); time.sleep(600)\''
)


def test_a_failed_takeover_puts_flanneld_back_and_stops_the_roll(built) -> None:
    """The agent cannot start on node1: node1 gets flanneld and docker's units back as they
    were, and node2, not reached, is named and left alone."""
    lab, cluster, inventory = built
    before = hb.snapshot(lab, NAMES)
    pids = {h: dockerd_pid(lab, h) for h in NAMES}
    hb.run(lab, "node1", SQUAT)
    try:
        out = takeover(lab, inventory, ok=False)
    finally:
        hb.run(lab, "node1", "systemctl stop squat-healthz")
    assert "node1: takeover failed (" in out and "flanneld runs again as before" in out, out
    assert "the agent said: " in out and "cannot listen" in out, out  # why, from its journal
    assert "'node2': 'takeover: not changed: the one-by-one restart of overlay-agent stopped at " \
           "node1" in out, out  # fmt: skip
    after = hb.snapshot(lab, NAMES)
    assert after["node2"] == before["node2"] and after["v2"] == before["v2"]
    changed = set(before["node1"]) ^ set(after["node1"])  # type: ignore[arg-type]
    assert {ln.split()[1] for ln in changed} == {"flanneld", "overlay-agent"}, changed
    assert hb.run(lab, "node1", "systemctl is-enabled flanneld").strip() == "enabled"
    assert on(lab, "node1", "systemctl is-enabled overlay-agent").stdout.strip() == "disabled"
    assert "persist off" in hb.run(lab, "node1", "ip -d link show flannel0")  # flanneld's again
    assert {h: dockerd_pid(lab, h) for h in NAMES} == pids
    for host in NAMES:
        assert hb.containers(lab, host) == cluster.hosts[host].containers
    assert_pings(lab, cluster)


def test_flanneld_is_replaced_host_by_host_without_a_docker_restart(built) -> None:
    lab, cluster, inventory = built
    pids = {h: dockerd_pid(lab, h) for h in NAMES}
    one = cluster.hosts["node1"]
    # node1's v2 lease with 2 h left (above flanneld's 1 h renew margin): the takeover renews it
    short = f"{hb.ETCDCTL2} set --ttl 7200 --swap-with-value '{one.lease_value}' {one.lease_key}"
    hb.run(lab, "node2", f"{short} '{one.lease_value}' >/dev/null")
    assert v2_ttl(lab, one.lease_key) <= 7200

    probes = {h: start_probe(lab, other, cluster.hosts[h].containers[hb.APP].ip)
              for h, other in (("node1", "node2"), ("node2", "node1"))}  # fmt: skip
    out = takeover(lab, inventory, "node1")
    assert "docker keeps running: its flags are the agent's" in out, out
    gap, replies = probe_gap(lab, "node2", probes["node1"])
    print(f"node1's takeover, seen from node2's app: longest gap {gap:.1f} s, {replies} replies")
    assert gap < 10 and replies > 5, (gap, replies)
    assert_taken_over(lab, cluster, "node1")
    assert v2_ttl(lab, one.lease_key) > 86000  # flanneld on node2 keeps routing to node1
    vendor = hb.run(lab, "node1", "systemctl show -p FragmentPath --value docker").strip()
    assert "--bip=" in hb.run(lab, "node1", f"cat {BACKUP}{vendor}")  # the hand edit, kept
    assert "--bip=" not in hb.run(lab, "node1", f"cat {vendor}")
    assert hb.run(lab, "node2", "systemctl is-active flanneld").strip() == "active"
    assert_pings(lab, cluster)  # the agent on node1 and flanneld on node2, udp on 8285

    out = takeover(lab, inventory, "node2")
    gap, replies = probe_gap(lab, "node1", probes["node2"])
    print(f"node2's takeover, seen from node1's app: longest gap {gap:.1f} s, {replies} replies")
    assert gap < 10 and replies > 5, (gap, replies)
    assert_taken_over(lab, cluster, "node2")
    override = hb.files.DOCKER_OVERRIDE
    assert on(lab, "node2", f"test -e {override}").returncode != 0
    assert "ExecStart=" in hb.run(lab, "node2", f"cat {BACKUP}{override}")
    assert "RequiredBy=docker.service" in hb.run(lab, "node2",
                                                 f"cat {BACKUP}{hb.files.HAND_UNIT}")  # fmt: skip
    assert_pings(lab, cluster)
    assert {h: dockerd_pid(lab, h) for h in NAMES} == pids  # docker never restarted

    again = takeover(lab, inventory)  # nothing left to do anywhere
    assert not [ln for ln in again.splitlines() if " takeover " in f" {ln} "], again


def test_a_run_cut_before_the_agent_started_finishes(built) -> None:
    """What a cut SSH leaves after flanneld went: flanneld masked and stopped, no agent."""
    lab, cluster, inventory = built
    hb.run(lab, "node1", "systemctl stop overlay-agent")  # its persistent flannel0 stays
    out = takeover(lab, inventory, "node1")
    assert "to do: start overlay-agent on the imported lease" in out, out
    assert "to do: disable and mask flanneld" not in out and "(removed flannel0)" in out, out
    assert_taken_over(lab, cluster, "node1")
    assert_pings(lab, cluster)
