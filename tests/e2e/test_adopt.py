"""`overlayctl adopt` on the seed runbook's cluster built by hand (tests/e2e/handbuilt.py: etcd
in plain http with v2, flanneld's stand-in with v2 leases and its TUN, docker's hand edits,
long-running containers), following docs/runbooks/adopt.md command by command.

What the issue asks to hold after the adoption: every host keeps its subnet (node2's
subnet.env removed first: its lease must come from etcd), every container its ID, start time
and address and can ping the others, etcd its member and cluster IDs and data, TLS with client
certificates on and plain http gone, no flanneld, docker's hand edits backed up and gone,
`status` healthy, the next `plan` 0 changes, and each host's outage measured and printed.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl.lab import state
from tests.e2e import handbuilt as hb
from tests.e2e.test_runbooks import RUNBOOKS, commands
from tests.labtools import cli, full_lab, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
NAMES = ["node1", "node2"]
CA = "/etc/overlayctl/pki/ca.crt"
ADMIN = "--cert=/etc/overlayctl/pki/etcd-admin.crt --key=/etc/overlayctl/pki/etcd-admin.key"


@dataclass
class Adopted:
    lab: state.LabState
    built: hb.HandBuilt
    inventory: Path
    ran: dict[str, object]  # runbook command -> its CompletedProcess (in order)
    seconds: dict[str, float]
    around_first_plan: tuple[dict, dict]  # handbuilt.snapshot before and after it


def _with_inventory(command: str, inventory: Path) -> list[str]:
    """A runbook line (`overlayctl SUB ...`) as cli() arguments, naming INVENTORY."""
    words = shlex.split(command)
    assert words[0] == "overlayctl", command
    return [words[1], "-i", str(inventory), *words[2:]]


@pytest.fixture(scope="module")
def adopted() -> Iterator[Adopted]:
    with full_lab(2, "ad") as lab:
        built = hb.build(lab, NAMES)
        inventory = hb.inventory(lab, NAMES)  # cluster.tls: true, as by default
        # As after a reboot (/run is cleared): node2's lease must come from etcd, not this file.
        hb.run(lab, "node2", "rm /run/flannel/subnet.env")
        ran: dict[str, object] = {}
        seconds: dict[str, float] = {}
        around: list[dict] = []
        for command in commands(RUNBOOKS / "adopt.md"):
            if not ran:
                around.append(hb.snapshot(lab, NAMES))
            started = time.monotonic()
            key = command if command not in ran else f"{command} (again)"
            ran[key] = cli(lab, *_with_inventory(command, inventory))
            seconds[key] = time.monotonic() - started
            print(f"$ {command}\n{ran[key].stdout}{ran[key].stderr}")  # shown with -s
            if len(ran) == 1:
                around.append(hb.snapshot(lab, NAMES))
        print({k: round(v, 1) for k, v in seconds.items()})
        yield Adopted(lab, built, inventory, ran, seconds, (around[0], around[1]))


def _ok(adopted: Adopted, key: str):  # type: ignore[no-untyped-def]
    result = adopted.ran[key]
    assert result.returncode == 0, f"{key}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_plan_first_shows_the_adoption_and_changes_nothing(adopted: Adopted) -> None:
    first = _ok(adopted, "overlayctl plan")
    assert "=== adoption: init would refuse:" in first.stdout
    assert "=== adopt would:" in first.stdout, first.stdout
    assert "--- etcd: 2 peer URLs to https, member by member" in first.stdout
    for name, host in adopted.built.hosts.items():
        assert f"--- v2 -> v3: {host.subnet}: {name} ({host.address}), v2 lease" in first.stdout
        assert f"--- {name}: disable and mask flanneld" in first.stdout
        assert f"--- {name}: docker keeps running (its flags are the agent's)" in first.stdout
    before, after = adopted.around_first_plan
    assert after == before  # every file, unit, PID, device, member and v2 key


def test_the_runbook_s_commands_all_succeed(adopted: Adopted) -> None:
    for key in adopted.ran:
        _ok(adopted, key)


def test_every_host_keeps_its_subnet_and_every_container_its_address(adopted: Adopted) -> None:
    lab, built = adopted.lab, adopted.built
    for name, host in built.hosts.items():
        gateway = host.subnet.replace(".0/24", ".1/24")
        env = hb.run(lab, name, "cat /run/flannel/subnet.env")
        assert f"FLANNEL_SUBNET={gateway}\n" in env, (name, env)
        assert hb.run(lab, name, "ip -4 -o addr show docker0").split()[3] == gateway
        now = hb.containers(lab, name)
        for cname, before in host.containers.items():
            assert now[cname] == before, (name, cname)  # same ID, StartedAt and address
    for name, host in built.hosts.items():
        for other in built.hosts.values():
            if other is not host:
                for c in other.containers.values():
                    assert hb.ping(lab, name, c.ip), (name, c.ip)


def _etcdctl(adopted: Adopted, host: str, args: str, scheme: str = "https") -> str:
    address = adopted.built.etcd.addresses[host]
    tls = f" --cacert={CA} {ADMIN}" if scheme == "https" else ""
    flags = f"--dial-timeout=3s --command-timeout=5s --endpoints={scheme}://{address}:2379{tls}"
    return hb.run(adopted.lab, host, f"ETCDCTL_API=3 etcdctl {flags} {args}")


def test_etcd_keeps_members_and_data_and_speaks_only_tls(adopted: Adopted) -> None:
    etcd = adopted.built.etcd
    doc = json.loads(_etcdctl(adopted, "node1", "member list -w json"))
    members = {m["name"]: m for m in doc["members"]}
    assert {n: f"{m['ID']:x}" for n, m in members.items()} == etcd.members
    assert f"{doc['header']['cluster_id']:x}" == etcd.cluster_id
    for name, m in members.items():
        address = etcd.addresses[name]
        assert m["peerURLs"] == [f"https://{address}:2380"], m
        assert m["clientURLs"] == [f"https://{address}:2379"], m  # node1's :4001 slip gone
    assert _etcdctl(adopted, "node1", f"get {hb.V3_KEY} --print-value-only").strip()
    plain = on(adopted.lab, "node2", "ETCDCTL_API=3 etcdctl --dial-timeout=2s --command-timeout=3s "
               f"--endpoints=http://{etcd.addresses['node1']}:2379 get /x")  # fmt: skip
    assert plain.returncode != 0
    leases = _etcdctl(adopted, "node1", f"get --prefix {hb.PREFIX}/subnets/ --keys-only")
    for host in adopted.built.hosts.values():
        assert host.lease_key in leases.split(), leases
    for name in NAMES:  # the v2 API off again (and its keys deleted, saved locally first)
        conf = hb.run(adopted.lab, name, f"cat {hb.ETCD_CONF}")
        assert '\nETCD_ENABLE_V2="true"' not in conf, conf
    dumps = list((adopted.lab.dir / "overlayctl-state").glob("*/adopt/v2-dump*.json"))
    assert len(dumps) == 1 and hb.PREFIX in dumps[0].read_text()


def test_flanneld_is_gone_and_docker_runs_on_our_drop_in(adopted: Adopted) -> None:
    lab = adopted.lab
    for name in NAMES:
        state_ = hb.run(lab, name, "systemctl is-enabled flanneld; systemctl is-active flanneld; "
                        "ip -o link show | awk -F': ' '{print $2}'; "
                        "systemctl show docker -p DropInPaths")  # fmt: skip
        assert "masked" in state_ and "\ninactive\n" in state_, state_
        assert "flannel1" not in state_, state_
        assert "override.conf" not in state_, state_
        backups = hb.run(lab, name, "find /var/lib/overlayctl/backup -type f | head -50")
        assert backups.strip(), name  # the hand edits were backed up


def test_outage_is_measured_and_printed(adopted: Adopted) -> None:
    adopt = _ok(adopted, "overlayctl adopt --yes")
    lines = re.findall(r"outage +(node\d): containers kept (\d+), restarted (\d+), gone (\d+); "
                       r"longest silence ([\d.]+) s", adopt.stdout)  # fmt: skip
    assert {line[0] for line in lines} == set(NAMES), adopt.stdout
    for host, kept, restarted, gone, silence in lines:
        # The runbook's docker flags are the agent's: docker is not restarted anywhere.
        assert (int(kept), int(restarted), int(gone)) == (2, 0, 0), host
        assert float(silence) < 10.0, (host, silence)
    assert "silent at the same time" not in adopt.stdout


def test_the_cluster_is_healthy_and_nothing_is_left_to_do(adopted: Adopted) -> None:
    status = _ok(adopted, "overlayctl status")
    assert "healthy" in status.stdout
    again = _ok(adopted, "overlayctl plan (again)")
    assert "adoption" not in again.stdout
    after = cli(adopted.lab, "init", "-i", str(adopted.inventory))
    assert after.returncode == 0, after.stderr
    assert "init: 0 changes" in after.stdout, after.stdout[-2000:]
