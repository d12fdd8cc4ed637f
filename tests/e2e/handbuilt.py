"""The seed runbook's cluster built BY HAND on full lab hosts, so `overlayctl adopt` is tested on
what operators really have (docs/design/adopt.md section 4; the runbook:
/work/shared/seed/flannel-etcd-docker-runbook.md).

Everything goes through `on(lab, host, ...)` (SSH, as a human at a root shell), in the runbook's
order and with its slips kept, because those slips are what adopt must survive:

- `build_etcd`: etcd 3.4 from `/etc/etcd/etcd.conf` (plain http peers and clients on 0.0.0.0,
  the lab addresses advertised, node1's wrong `http://<node2>:4001` client URL kept, plus
  `ETCD_ENABLE_V2="true"`, which 3.3 had on by default and 3.4 needs), Debian's unit pointed at
  it by a hand-made `override.conf`, every member started at once, then the runbook's
  `ETCDCTL_API=2 etcdctl mk <prefix>/config '{"Network":...}'` and one v3 key (`V3_KEY`), which
  must survive adoption.

Stable API for other tests (helpers of issue 21 use it): `build_etcd`, `Etcd`, `etcd_conf`,
`inventory`, `ETCDCTL2`, `ETCDCTL3`, `V3_KEY`, `NETWORK`, `PREFIX`, `run`, `on_all`, `put`.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from overlayctl.lab import state
from tests.labtools import on

NETWORK = "172.21.0.0/16"  # the runbook's `etcdctl mk .../config '{"Network":"172.21.0.0/16"}'`
# The runbook's FLANNEL_ETCD_PREFIX. The lab's inventory says nothing, so it means overlayctl's
# default /coreos.com/network: `inventory()` writes this one.
PREFIX = "/atomic.io/network"
V3_KEY = "/handbuilt/kept"  # a v3 key written by hand: adoption must keep etcd's data
# etcdctl as the runbook's operator types it on a member (clients listen on 0.0.0.0, plain http).
ETCDCTL2 = "ETCDCTL_API=2 etcdctl --endpoints=http://127.0.0.1:2379"
ETCDCTL3 = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379"
ETCD_CONF = "/etc/etcd/etcd.conf"
ETCD_OVERRIDE = "/etc/systemd/system/etcd.service.d/override.conf"
# What `systemctl edit etcd` would leave: the empty line resets Debian's `/etc/default/%p`.
ETCD_OVERRIDE_TEXT = "[Service]\nEnvironmentFile=\nEnvironmentFile=/etc/etcd/etcd.conf\n"


@dataclass(frozen=True)
class Etcd:
    """What `build_etcd` made: members by name (IDs as `member list` prints them, hex), the
    cluster ID, the v2 prefix holding the runbook's config, and the v3 key written by hand."""

    names: tuple[str, ...]
    addresses: dict[str, str]  # name -> lab address (what the runbook's 192.168.255.x are)
    members: dict[str, str]  # name -> member ID, hex
    cluster_id: str  # hex
    prefix: str
    network: str
    v3_key: str
    v3_value: str


def run(lab: state.LabState, host: str, command: str) -> str:
    """COMMAND on HOST; its stdout. Fails the test with host, command and stderr otherwise."""
    result = on(lab, host, command)
    assert result.returncode == 0, f"{host}: {command!r} -> {result.returncode}: {result.stderr}"
    return result.stdout


def on_all(
    lab: state.LabState, commands: dict[str, str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """HOST -> COMMAND run on every host at the same time (as in two terminals): etcd's members
    must start together, each waits for the others' votes."""
    with ThreadPoolExecutor(max_workers=max(1, len(commands))) as pool:
        futures = {host: pool.submit(on, lab, host, cmd) for host, cmd in commands.items()}
        return {host: future.result() for host, future in futures.items()}


def put(lab: state.LabState, host: str, path: str, text: str, mode: str = "0644") -> None:
    """Write TEXT to PATH on HOST (its folder made), as an editor would: the whole file."""
    data = base64.b64encode(text.encode()).decode()
    folder = shlex.quote(str(Path(path).parent))
    target = shlex.quote(path)
    run(lab, host, f"mkdir -p {folder} && echo {data} | base64 -d > {target} && chmod {mode} "
                   f"{target}")  # fmt: skip


def etcd_conf(addresses: dict[str, str], name: str) -> str:
    """The runbook's /etc/etcd/etcd.conf (5.5.6) for member NAME, the lab's ADDRESSES (name ->
    address, in member order) in place of 192.168.255.154/155. The first member advertises the
    SECOND's address on 4001 as a client URL, the runbook's slip; ETCD_ENABLE_V2 is uncommented
    (etcd 3.4 serves no v2 without it, and the runbook's flanneld speaks only v2)."""
    names = list(addresses)
    own = addresses[name]
    clients = f"http://{own}:2379,http://{addresses[names[1]] if name == names[0] else own}:4001"
    cluster = ",".join(f"{n}=http://{a}:2380" for n, a in addresses.items())
    return f"""#[Member]
#ETCD_CORS=""
ETCD_DATA_DIR="/var/lib/etcd/{name}.etcd"
#ETCD_WAL_DIR=""
ETCD_LISTEN_PEER_URLS="http://0.0.0.0:2380"
ETCD_LISTEN_CLIENT_URLS="http://0.0.0.0:2379,http://0.0.0.0:4001"
#ETCD_MAX_SNAPSHOTS="5"
#ETCD_MAX_WALS="5"
ETCD_NAME="{name}"
#ETCD_SNAPSHOT_COUNT="100000"
#ETCD_HEARTBEAT_INTERVAL="100"
#ETCD_ELECTION_TIMEOUT="1000"
#ETCD_QUOTA_BACKEND_BYTES="0"
#ETCD_MAX_REQUEST_BYTES="1572864"
#ETCD_GRPC_KEEPALIVE_MIN_TIME="5s"
#ETCD_GRPC_KEEPALIVE_INTERVAL="2h0m0s"
#ETCD_GRPC_KEEPALIVE_TIMEOUT="20s"
#
#[Clustering]
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://{own}:2380"
ETCD_ADVERTISE_CLIENT_URLS="{clients}"
#ETCD_DISCOVERY=""
#ETCD_DISCOVERY_FALLBACK="proxy"
#ETCD_DISCOVERY_PROXY=""
#ETCD_DISCOVERY_SRV=""
ETCD_INITIAL_CLUSTER="{cluster}"
#ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster"
#ETCD_INITIAL_CLUSTER_STATE="new"
#ETCD_STRICT_RECONFIG_CHECK="true"
ETCD_ENABLE_V2="true"
#
#[Proxy]

"""


def build_etcd(
    lab: state.LabState, names: list[str], prefix: str = PREFIX, network: str = NETWORK
) -> Etcd:
    """The runbook's 5.5.5-5.6.3 on NAMES (at least two: the first one's slip names the second):
    etcd.conf, the hand-made override, `systemctl enable etcd; systemctl start etcd` on every
    member at once, `cluster-health`, then `etcdctl mk PREFIX/config` (v2) and V3_KEY (v3)."""
    assert len(names) >= 2, "the runbook's etcd.conf names a second member"
    addresses = {name: lab.host(name).address for name in names}
    for name in names:
        put(lab, name, ETCD_CONF, etcd_conf(addresses, name))
        put(lab, name, ETCD_OVERRIDE, ETCD_OVERRIDE_TEXT)
    start = "systemctl daemon-reload && systemctl enable etcd 2>/dev/null; systemctl start etcd"
    started = on_all(lab, {name: start for name in names})
    failed = {h: r.stderr for h, r in started.items() if r.returncode != 0}
    assert not failed, f"etcd did not start: {failed}"
    _wait_healthy(lab, names[0], addresses[names[0]])
    config = shlex.quote(json.dumps({"Network": network}, separators=(",", ":")))
    run(lab, names[0], f"{ETCDCTL2} mk {shlex.quote(prefix + '/config')} {config}")
    value = f"written by hand {secrets.token_hex(4)}"
    run(lab, names[0], f"{ETCDCTL3} put {V3_KEY} {shlex.quote(value)}")
    members, cluster_id = member_ids(lab, names[0])
    assert set(members) == set(names), members
    return Etcd(tuple(names), addresses, members, cluster_id, prefix, network, V3_KEY, value)


def _wait_healthy(lab: state.LabState, host: str, address: str, timeout: float = 30) -> None:
    """The runbook's 5.5.9 check (`etcdctl -C http://IP:2379 cluster-health`), polled."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = on(lab, host, f"ETCDCTL_API=2 etcdctl -C http://{address}:2379 cluster-health")
        if result.returncode == 0 and "cluster is healthy" in result.stdout:
            return
        time.sleep(0.5)
    raise AssertionError(f"etcd not healthy within {timeout} s: {result}")


def member_ids(lab: state.LabState, host: str) -> tuple[dict[str, str], str]:
    """(member name -> ID, cluster ID), both hex as etcdctl's table prints them, read through
    HOST's plain-http client URL (the hand-built state)."""
    doc = json.loads(run(lab, host, f"{ETCDCTL3} member list -w json"))
    members = {m["name"]: f"{m['ID']:x}" for m in doc["members"]}
    return members, f"{doc['header']['cluster_id']:x}"


def inventory(
    lab: state.LabState,
    names: list[str],
    path: Path | None = None,
    backend: str = "udp",
    prefix: str = PREFIX,
    **cluster: object,
) -> Path:
    """The lab's inventory for NAMES with the runbook's network, PREFIX and BACKEND (udp: what
    flanneld 0.7 runs when the config names none), CLUSTER's keys on top (e.g. tls=False).
    Written next to the lab's own cluster.yaml (PATH: elsewhere)."""
    doc = yaml.safe_load(lab.inventory.read_text())
    doc["cluster"].update(
        {"network": NETWORK, "backend": backend, "etcd_prefix": prefix, **cluster}
    )
    doc["hosts"] = [h for h in doc["hosts"] if h["name"] in names]
    target = path or lab.dir / f"handbuilt-{backend}.yaml"
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target
