"""adopt's PeerTls on the runbook's etcd built by hand (tests/e2e/handbuilt.py build_etcd: plain
http peers and clients on 0.0.0.0, v2 on, Debian's unit pointed at the file by override.conf),
2 members, over SSH through the engine (tests/e2e/peer_tls_driver.py):
- a restart that cannot succeed (node1's peer key unreadable for etcd) puts node1's previous
  etcd.conf back and restarts it, stops the roll (node2 untouched), exit 1, quickly;
- once fixed, with node2's temporary port closed by its firewall, the re-run stops in U1
  before the member update that would cut node2 off (node1 moved, node2 not);
- opened, a re-run goes from there to every peer URL on https:2380, keeping member IDs,
  cluster ID, the v3 key and the v2 config; a third run does nothing;
- then init's Gather and Etcd phases (R3) on top: its health wait asks each member at the
  scheme it serves now, so the member by member move of the clients to https goes through.
Destructive: its own 2-host lab."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl import paths as hp
from overlayctl.lab import state
from tests import installed
from tests.e2e import handbuilt as hb
from tests.labtools import cli, full_lab

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
NAMES = ["node1", "node2"]
DRIVER = Path(__file__).with_name("peer_tls_driver.py")


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[state.LabState, hb.Etcd, Path]]:
    with full_lab(2, "ptl") as lab:
        etcd = hb.build_etcd(lab, NAMES)
        cli(lab, "--version")  # builds the installed venv the driver runs in
        yield lab, etcd, hb.inventory(lab, NAMES)  # tls: true, the default


def drive(lab: state.LabState, inventory: Path, *args: str) -> tuple[int, str, float]:
    """The driver in the workstation namespace: exit code, output, seconds."""
    argv = ["ip", "netns", "exec", lab.workstation_netns, str(installed.get().python),
            str(DRIVER), str(inventory), *args]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env=installed.clean_env(), cwd=installed.get().venv)  # fmt: skip
    took = time.monotonic() - started
    print(f"peer-tls {' '.join(args)}: exit {done.returncode}, {took:.1f} s\n{done.stdout}"
          f"{done.stderr[-2000:]}")  # fmt: skip
    return done.returncode, done.stdout, took


def members(lab: state.LabState, host: str, scheme: str = "http") -> dict:
    """`member list -w json` through HOST's own client URL at SCHEME."""
    tls = (f" --cacert={hp.CA_CERT} --cert={hp.ETCD_ADMIN_CERT} --key={hp.ETCD_ADMIN_KEY}"
           if scheme == "https" else "")  # fmt: skip
    out = hb.run(lab, host, f"ETCDCTL_API=3 etcdctl --endpoints={scheme}://127.0.0.1:2379{tls} "
                            "member list -w json")  # fmt: skip
    return json.loads(out)


def peer_urls(doc: dict) -> dict[str, list[str]]:
    return {m["name"]: m["peerURLs"] for m in doc["members"]}


def listen_peers(lab: state.LabState, host: str) -> str:
    return hb.run(lab, host, f"grep ^ETCD_LISTEN_PEER_URLS= {hp.ETCD_CONF}").strip()


def test_peer_tls_rolls_back_a_failed_member_then_resumes_to_https(built) -> None:
    lab, etcd, inventory = built
    before = members(lab, "node1")
    node2_file = listen_peers(lab, "node2")

    code, out, took = drive(lab, inventory, "--fail-on=node1", "--etcd-timeout=90")
    assert code == 1, out
    assert "node1: etcd did not come back as peers_dual" in out, out
    assert "previous etcd.conf is back" in out, out
    assert took < 60, f"the failure took {took:.0f} s: no wait may run out on it"
    assert peer_urls(members(lab, "node1")) == peer_urls(before)
    assert listen_peers(lab, "node1") == 'ETCD_LISTEN_PEER_URLS="http://0.0.0.0:2380"'
    assert listen_peers(lab, "node2") == node2_file  # the roll stopped before node2
    health = hb.run(lab, "node1", f"{hb.ETCDCTL3} endpoint health --cluster -w json")
    assert all(h["health"] for h in json.loads(health)), health

    hb.run(lab, "node1", f"chown etcd:etcd {hp.ETCD_PEER_KEY}")
    # A firewall that lets 2380 through but not the temporary port: no member update may cut
    # node2 off; the run stops in U1 with node1 moved and node2 not.
    block = "INPUT -p tcp --dport 2382 -j REJECT"
    hb.run(lab, "node2", f"iptables -I {block}")
    code, out, _ = drive(lab, inventory)
    node2_tmp = f"https://{etcd.addresses['node2']}:2382"
    assert code == 1 and f"node1 cannot connect to {node2_tmp}" in out, out
    assert peer_urls(members(lab, "node1")) == {
        "node1": [f"https://{etcd.addresses['node1']}:2382"],
        "node2": [f"http://{etcd.addresses['node2']}:2380"],
    }
    hb.run(lab, "node2", f"iptables -D {block}")
    code, out, took = drive(lab, inventory)  # resumes in U1
    assert code == 0, out
    assert "R1:" not in out and "U1: node1:" not in out, out
    for round_name in ("R2", "U2"):
        assert f"{round_name}: node1:" in out and f"{round_name}: node2:" in out, out
    after = members(lab, "node2")
    assert after["header"]["cluster_id"] == before["header"]["cluster_id"]
    assert {m["ID"] for m in after["members"]} == {m["ID"] for m in before["members"]}
    assert peer_urls(after) == {n: [f"https://{etcd.addresses[n]}:2380"] for n in NAMES}
    assert etcd.v3_value in hb.run(lab, "node2", f"{hb.ETCDCTL3} get {etcd.v3_key}")
    assert hb.NETWORK in hb.run(lab, "node2", f"{hb.ETCDCTL2} get {etcd.prefix}/config")
    for name in NAMES:
        assert listen_peers(lab, name) == (
            f'ETCD_LISTEN_PEER_URLS="https://{etcd.addresses[name]}:2380,'
            f'https://{etcd.addresses[name]}:2382"'
        )

    code, out, _ = drive(lab, inventory)
    assert code == 0 and "every member's peer URL is https already" in out, out


def test_init_s_etcd_phase_after_the_rounds(built) -> None:
    """R3: init's Gather accepts the interim files (peers already https) and its Etcd phase
    rolls the members to https clients, asking each at the scheme it serves."""
    lab, etcd, inventory = built
    before = members(lab, "node1")
    code, out, _ = drive(lab, inventory, "--r3", "--etcd-timeout=30")
    assert code == 0, out
    after = members(lab, "node1", "https")
    assert {m["ID"] for m in after["members"]} == {m["ID"] for m in before["members"]}
    assert all(u.startswith("https://") for m in after["members"] for u in m["clientURLs"])
    assert peer_urls(after) == {n: [f"https://{etcd.addresses[n]}:2380"] for n in NAMES}
