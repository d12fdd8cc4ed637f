"""The seed runbook's cluster built BY HAND on full lab hosts, so `overlayctl adopt` is tested on
what operators really have (docs/design/adopt.md section 4; the runbook:
/work/shared/seed/flannel-etcd-docker-runbook.md; its files: handbuilt_files.py).

Everything goes through `on(lab, host, ...)` (SSH, as a human at a root shell), in the runbook's
order and with its slips kept, because those slips are what adopt must survive:

- `build_etcd`: etcd 3.4 from `/etc/etcd/etcd.conf` (plain http peers and clients on 0.0.0.0,
  the lab addresses advertised, node1's wrong `http://<node2>:4001` client URL kept, plus
  `ETCD_ENABLE_V2="true"`, which 3.3 had on by default and 3.4 needs), Debian's unit pointed at
  it by a hand-made `override.conf`, every member started at once, then the runbook's
  `ETCDCTL_API=2 etcdctl mk <prefix>/config '{"Network":...}'` and one v3 key (`V3_KEY`), which
  must survive adoption.
- `build`: the above, then /etc/hosts and ip_forward (5.5.3-4), flanneld (the stand-in
  tests/e2e/fake_flanneld.py as the RPM installs it, its sysconfig with node1's
  `--etcd endpoints=` slip; the first host keeps the RPM's unit, `WantedBy=docker.service`, the
  others get a hand-written `/etc/systemd/system/flanneld.service` with `RequiredBy=`), docker
  (the first host: the vendor unit's ExecStart edited in place, no backup; the others: a
  hand-made `docker.service.d/override.conf` with `ExecStart=` reset), docker restarted, and
  two busybox containers per host: `app` (--restart=always) and `solo` (no restart policy).

Stable API for other tests (helpers of issue 21 use it): everything in `__all__`.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from overlayctl.lab import state
from overlayctl.lab.template import BUSYBOX_IMAGE, BUSYBOX_IMAGE_TAG
from tests.e2e import handbuilt_files as files
from tests.e2e.handbuilt_read import (
    ETCDCTL2,
    ETCDCTL3,
    Container,
    containers,
    member_list,
    on_all,
    run,
    run_all,
    snapshot,
    v2_dump,
    v2_leases,
)
from tests.labtools import on

__all__ = [
    "APP", "ETCDCTL2", "ETCDCTL3", "ETCD_CONF", "ETCD_OVERRIDE", "ETCD_OVERRIDE_TEXT", "NETWORK",
    "PREFIX", "SOLO", "V3_KEY", "Container", "Etcd", "HandBuilt", "Host", "build", "build_etcd",
    "containers", "etcd_conf", "inventory", "member_ids", "member_list", "on_all", "ping", "put",
    "run", "run_all", "snapshot", "v2_dump", "v2_leases",
]  # fmt: skip

NETWORK, PREFIX = files.NETWORK, files.PREFIX  # the runbook's network and v2 prefix
V3_KEY = "/handbuilt/kept"  # a v3 key written by hand: adoption must keep etcd's data
APP, SOLO = "app", "solo"  # --restart=always, and no restart policy (a docker restart loses it)
# Stops on SIGTERM within a second (a bare `sleep` as PID 1 ignores it: docker's 10 s timeout).
# The etcd files, as the first version of this module named them.
ETCD_CONF, ETCD_OVERRIDE, ETCD_OVERRIDE_TEXT = (
    files.ETCD_CONF, files.ETCD_OVERRIDE, files.ETCD_OVERRIDE_TEXT
)  # fmt: skip
etcd_conf = files.etcd_conf
WORKLOAD = shlex.quote("trap 'exit 0' TERM; while true; do sleep 1; done")


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


@dataclass(frozen=True)
class Host:
    """One hand-built host as `build` left it."""

    name: str
    address: str
    subnet: str  # the v2 lease's, e.g. 172.21.31.0/24
    lease_key: str  # <prefix>/subnets/172.21.31.0-24
    lease_value: str  # {"PublicIP":"..."}
    lease_ttl: int  # seconds left when read (24 h at the start)
    docker0: str  # e.g. 172.21.31.1/24
    tun: str  # flanneld's TUN, flannel0
    containers: dict[str, Container]  # APP and SOLO


@dataclass(frozen=True)
class HandBuilt:
    etcd: Etcd
    hosts: dict[str, Host]


def put(lab: state.LabState, host: str, path: str, text: str, mode: str = "0644") -> None:
    """Write TEXT to PATH on HOST (its folder made), as an editor would: the whole file."""
    data = base64.b64encode(text.encode()).decode()
    folder, target = shlex.quote(str(Path(path).parent)), shlex.quote(path)
    run(lab, host, f"mkdir -p {folder} && echo {data} | base64 -d > {target} && chmod {mode} "
                   f"{target}")  # fmt: skip


def build_etcd(
    lab: state.LabState, names: list[str], prefix: str = PREFIX, network: str = NETWORK
) -> Etcd:
    """The runbook's 5.5.5-5.6.3 on NAMES (at least two: the first one's slip names the second):
    etcd.conf, the hand-made override, `systemctl enable etcd; systemctl start etcd` on every
    member at once, `cluster-health`, then `etcdctl mk PREFIX/config` (v2) and V3_KEY (v3)."""
    assert len(names) >= 2, "the runbook's etcd.conf names a second member"
    addresses = {name: lab.host(name).address for name in names}
    for name in names:
        put(lab, name, files.ETCD_CONF, files.etcd_conf(addresses, name))
        put(lab, name, files.ETCD_OVERRIDE, files.ETCD_OVERRIDE_TEXT)
    start = "systemctl daemon-reload && systemctl enable etcd 2>/dev/null; systemctl start etcd"
    run_all(lab, {name: start for name in names})
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
    return {m["name"]: f"{m['ID']:x}" for m in doc["members"]}, f"{doc['header']['cluster_id']:x}"


def build(lab: state.LabState, names: list[str], prefix: str = PREFIX) -> HandBuilt:
    """The whole runbook by hand on NAMES (see the module's docstring), every member of etcd
    and every one a docker host. About 30 s for two hosts."""
    addresses = {name: lab.host(name).address for name in names}
    hosts = "".join(f"{a} {n}\n" for n, a in addresses.items())
    prepare = (f"printf %s {shlex.quote(hosts)} >> /etc/hosts && echo net.ipv4.ip_forward=1 "
               f">> /etc/sysctl.conf && sysctl -p >/dev/null")  # fmt: skip
    run_all(lab, {name: prepare for name in names})
    etcd = build_etcd(lab, names, prefix)
    for index, name in enumerate(names):
        _install_flanneld(lab, name, addresses, prefix, first=index == 0)
    start = "systemctl daemon-reload && systemctl enable flanneld 2>/dev/null && " \
            "systemctl start flanneld && cat /run/flannel/subnet.env"  # fmt: skip
    envs = run_all(lab, {name: start for name in names})
    for index, name in enumerate(names):
        _configure_docker(lab, name, files.docker_flags(envs[name]), first=index == 0)
    restart = "systemctl daemon-reload && systemctl enable docker 2>/dev/null; " \
              "systemctl restart docker && " + _start_containers()  # fmt: skip
    run_all(lab, {name: restart for name in names})
    leases = v2_leases(v2_dump(lab, names[0], prefix))
    return HandBuilt(etcd, {name: _read_host(lab, name, leases) for name in names})


def _install_flanneld(
    lab: state.LabState, host: str, addresses: dict[str, str], prefix: str, first: bool
) -> None:
    """`yum install flannel` (the stand-in and the RPM's files), then 5.6.2's sysconfig; on
    all but the first host a hand-written unit too."""
    stand_in = (Path(__file__).parent / "fake_flanneld.py").read_text()
    put(lab, host, files.FLANNELD, stand_in, "0755")
    put(lab, host, files.FLANNELD_START, files.FLANNELD_START_TEXT, "0755")
    put(lab, host, files.MK_DOCKER_OPTS, files.MK_DOCKER_OPTS_TEXT, "0755")
    put(lab, host, files.RPM_UNIT, files.RPM_UNIT_TEXT)
    put(lab, host, files.RPM_DOCKER_DROPIN, files.RPM_DOCKER_DROPIN_TEXT)
    put(lab, host, files.SYSCONFIG, files.sysconfig(addresses, prefix, "eth0", slip=first))
    if not first:
        put(lab, host, files.HAND_UNIT, files.HAND_UNIT_TEXT)


def _configure_docker(lab: state.LabState, host: str, flags: str, first: bool) -> None:
    """5.7: FLAGS after dockerd. The first host edits the vendor unit in place, as the runbook
    does; the others use a hand-made override.conf (`systemctl edit docker`)."""
    if first:
        edit = shlex.quote(f"s|^ExecStart=/usr/sbin/dockerd .*|& {flags}|")
        run(lab, host, f'sed -i {edit} "$(systemctl show -p FragmentPath --value docker)"')
    else:
        put(lab, host, files.DOCKER_OVERRIDE, files.docker_override(flags))


def _start_containers() -> str:
    """A shell command: busybox imported (as the lab's tests do), then APP and SOLO."""
    tag = BUSYBOX_IMAGE_TAG
    image = f"docker image inspect {tag} >/dev/null 2>&1 || docker import {BUSYBOX_IMAGE} {tag}"
    app = f"docker run -d --restart=always --name {APP} {tag} sh -c {WORKLOAD}"
    solo = f"docker run -d --name {SOLO} {tag} sh -c {WORKLOAD}"
    return f"{{ {image} >/dev/null; }} && {app} >/dev/null && {solo} >/dev/null"


def _read_host(lab: state.LabState, host: str, leases: dict[str, dict]) -> Host:
    address = lab.host(host).address
    lease = leases[address]
    subnet = lease["key"].rsplit("/", 1)[1].replace("-", "/")
    devices = run(lab, host, "ip -4 -o addr show docker0; ip -o link show type tun").splitlines()
    docker0 = devices[0].split()[3]
    tun = devices[1].split(": ")[1]
    return Host(host, address, subnet, lease["key"], lease["value"], lease["ttl"], docker0, tun,
                containers(lab, host))  # fmt: skip


def ping(lab: state.LabState, host: str, ip: str, container: str = APP, count: int = 3) -> bool:
    """CONTAINER on HOST pings IP (bounded: COUNT pings, 2 s each at most)."""
    return on(lab, host, f"docker exec {container} ping -c {count} -W 2 {ip}").returncode == 0


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
