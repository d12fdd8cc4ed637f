"""The issue's promise for `overlayctl adopt` as a whole command: "a failed step leaves a cluster
that a re-run moves forward" (issue 21; docs/design/adopt.md 4, "Variants"), plus the refusal of a
stale v2 lease. One 2-host lab with the runbook's cluster built by hand (tests/e2e/handbuilt.py),
in order:

1. A v2 lease of an address no inventory host has: `adopt --yes` refuses (exit 4) naming the lease
   and --drop-stale, and changes nothing (handbuilt.snapshot).
2. `adopt --yes --drop-stale` cut in the middle: node2's sshd is reset the moment adopt writes
   its docker drop-in there, i.e. after node1's takeover and at the first write of node2's
   (faults.ssh_cut_when, the cut of test_faults). The run fails naming node2's takeover, and the
   cluster still works: node1's agent and node2's flanneld carry the containers' pings, etcd
   is healthy.
3. The same command again (with --break-lock: the cut run's lock on node2 stayed) ends where a
   whole adopt ends (test_adopt.py's checks of the end state), and a third `adopt --yes` has
   nothing left to do and restarts nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.e2e import test_adopt as whole
from tests.e2e.faults import ssh_cut_when
from tests.labtools import cli, full_lab, main_pids

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
NAMES = ["node1", "node2"]
STALE_KEY = f"{hb.PREFIX}/subnets/172.21.200.0-24"
STALE_IP = "192.168.255.250"  # no inventory host's address
STALE_VALUE = json.dumps({"PublicIP": STALE_IP}, separators=(",", ":"))


@dataclass
class Lab:
    lab: state.LabState
    built: hb.HandBuilt
    inventory: Path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Lab]:
    with full_lab(2, "ares") as lab:
        built = hb.build(lab, NAMES)
        assert STALE_IP not in {h.address for h in built.hosts.values()}
        yield Lab(lab, built, hb.inventory(lab, NAMES))


def adopt(cluster: Lab, *args: str):  # type: ignore[no-untyped-def]
    """`overlayctl adopt -i INVENTORY ARGS`, its output printed (-s) with the time it took."""
    started = time.monotonic()
    result = cli(cluster.lab, "adopt", "-i", str(cluster.inventory), *args)
    print(f"$ adopt {' '.join(args)}: exit {result.returncode} in "
          f"{time.monotonic() - started:.1f} s\n{result.stdout}{result.stderr}")  # fmt: skip
    return result


def test_a_stale_v2_lease_is_refused_and_nothing_changes(cluster: Lab) -> None:
    lab = cluster.lab
    before = hb.snapshot(lab, NAMES)
    hb.run(lab, "node1", f"{hb.ETCDCTL2} set --ttl 86400 {STALE_KEY} '{STALE_VALUE}'")
    result = adopt(cluster, "--yes")
    assert result.returncode == 4, result.stdout + result.stderr
    assert STALE_KEY in result.stderr and "--drop-stale" in result.stderr, result.stderr
    after = hb.snapshot(lab, NAMES)
    assert after["v2"] == {**before["v2"], STALE_KEY: (STALE_VALUE, True)}  # type: ignore[dict-item]
    assert {k: v for k, v in after.items() if k != "v2"} == {
        k: v for k, v in before.items() if k != "v2"
    }


def etcd_healthy(cluster: Lab) -> bool:
    """Both members answer on their (still plain http) client URLs (etcdctl 3.4 prints its
    verdicts on stderr)."""
    urls = ",".join(f"http://{a}:2379" for a in cluster.built.etcd.addresses.values())
    health = f"ETCDCTL_API=3 etcdctl --dial-timeout=3s --command-timeout=5s --endpoints={urls}"
    return hb.run(cluster.lab, "node1", f"{health} endpoint health 2>&1").count("is healthy") == 2


def test_a_run_cut_after_node1_s_takeover_leaves_a_working_cluster(cluster: Lab) -> None:
    lab = cluster.lab
    ours = f"test -e {hp.DOCKER_DROPIN}"  # written first in node2's takeover (override.conf)
    with ssh_cut_when(lab, "node2", ours) as cut:
        started = time.time()
        broken = adopt(cluster, "--yes", "--drop-stale")
        ended = time.time()
    assert cut.fired, f"the cut never fired\n{broken.stdout}{broken.stderr}"
    assert started < cut.fired < ended, (cut.fired, started, ended)
    # exit 1 (not init's refusal of a cluster built by hand, exit 4): the run stops before
    # init's phases, saying why, and the line of the step the cut stopped names node2
    assert broken.returncode == 1, broken.stdout + broken.stderr
    failed = [ln for ln in broken.stdout.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].split()[:2] == ["node2", "takeover"], broken.stdout
    assert "SSH connection lost" in failed[0], failed
    errors = [ln for ln in broken.stderr.splitlines() if ln.startswith("overlayctl: error:")]
    assert len(errors) == 1 and "flanneld may still run on node2" in errors[0], broken.stderr
    # node1 runs the agent, node2 still flanneld; they carry the containers' traffic (udp 8285)
    assert hb.run(lab, "node1", "systemctl is-active overlay-agent").strip() == "active"
    assert hb.run(lab, "node2", "systemctl is-active flanneld").strip() == "active"
    for host, other in (("node1", "node2"), ("node2", "node1")):
        for container in cluster.built.hosts[other].containers.values():
            assert hb.ping(lab, host, container.ip), (host, container)
    assert etcd_healthy(cluster)


def test_a_rerun_finishes_the_adoption_and_a_third_changes_nothing(cluster: Lab) -> None:
    lab = cluster.lab
    # The cut run could not release its lock on node2: the re-run says so and changes nothing,
    # then, as it says, --break-lock.
    locked = adopt(cluster, "--yes", "--drop-stale")
    assert locked.returncode != 0 and "adopt: 0 changes" in locked.stdout, locked.stdout
    assert "node2: locked by `overlayctl adopt`" in locked.stdout, locked.stdout
    assert "re-run with --break-lock" in locked.stdout, locked.stdout
    again = adopt(cluster, "--yes", "--drop-stale", "--break-lock")
    assert again.returncode == 0, again.stdout + again.stderr
    # test_adopt's checks of the end state read only .lab, .built and .inventory of its Adopted
    whole.test_every_host_keeps_its_subnet_and_every_container_its_address(cluster)  # type: ignore[arg-type]
    whole.test_etcd_keeps_members_and_data_and_speaks_only_tls(cluster)  # type: ignore[arg-type]
    whole.test_flanneld_is_gone_and_docker_runs_on_our_drop_in(cluster)  # type: ignore[arg-type]
    (dump,) = (lab.dir / "overlayctl-state").glob("*/adopt/v2-dump*.json")
    assert STALE_KEY in dump.read_text()  # the stale lease was dropped with v2, and kept here
    status = cli(lab, "status", "-i", str(cluster.inventory))
    assert status.returncode == 0, status.stdout + status.stderr
    planned = json.loads(cli(lab, "plan", "-i", str(cluster.inventory), "-o", "json").stdout)
    assert planned["changes"] == 0, planned

    pids = main_pids(lab, NAMES)
    third = adopt(cluster, "--yes")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "adopt: 0 changes" in third.stdout, third.stdout
    assert main_pids(lab, NAMES) == pids
