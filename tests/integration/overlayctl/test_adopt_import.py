"""adopt's import of flanneld's v2 data, against a real etcd 3.4 with `--enable-v2`, and real
overlay-agents taking the imported subnets.

Three light lab hosts on their own LAN: node1 runs etcd (client URL http://node1:2379, as the
runbook's cluster has it), node2 and node3 are nodes. The v2 data is written as the runbook and
flanneld 0.7 write it (`ETCDCTL_API=2 etcdctl mk`, `set --ttl 86400`, a `set` without TTL for a
reservation). The phases run as adopt runs them, their commands on node1 (tests/local_remote.py
enters node1's namespaces where SSH would log in). Nothing leaves the lab's namespaces.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayctl.errors import OverlayctlError
from overlayctl.etcd import v2_remote
from overlayctl.etcd.v2 import V2Lease, parse_dump
from overlayctl.etcd.v2_import import ImportRefused, decide
from overlayctl.inventory import parse_inventory
from overlayctl.inventory.model import Inventory
from overlayctl.lab.light import LightHost, LightLab
from overlayctl.phases.adopt_import import DropV2, ImportV2
from overlayctl.phases.base import Rollout, RolloutOptions
from overlayctl.remote.session import Reporter, Session
from tests.conftest import unique_name
from tests.integration.agent.lab_agents import agent_log, start_agent, start_etcd
from tests.integration.conftest import ETCD_BIN, EtcdServer, pki_tls
from tests.local_remote import LocalRemote
from tests.polling import wait_for

pytestmark = pytest.mark.lab

NETWORK = "172.21.0.0/16"
LEASES = {"node1": "172.21.31.0-24", "node2": "172.21.58.0-24"}  # with TTL 24 h
RESERVED = {"node3": "172.21.77.0-24"}  # without TTL


@dataclass
class Lab:
    lab: LightLab
    hosts: dict[str, LightHost]
    url: str  # etcd's client URL, node1's address on 2379
    procs: list[subprocess.Popen]

    def etcdctl(self, api: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """etcdctl on node1, v2 or v3 as API says (the runbook's commands are v2)."""
        argv = ["env", f"ETCDCTL_API={api}", "etcdctl", f"--endpoints={self.url}", *args]
        return self.hosts["node1"].run(argv, check=check)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not ETCD_BIN:
        pytest.skip("no etcd binary")
    light = LightLab(unique_name("a"))
    procs: list[subprocess.Popen] = []
    try:
        hosts = {n: light.add_host(n) for n in ("node1", "node2", "node3")}
        url = start_etcd(hosts["node1"], procs, "vxlan", "--enable-v2")
        yield Lab(light, hosts, url, procs)
    finally:
        light.close()  # kills every process in the hosts (etcd, agents) by their PID 1
        for proc in procs:
            proc.wait(timeout=10)


def inventory(lab: Lab, prefix: str, backend: str = "udp") -> Inventory:
    doc = {
        "cluster": {"name": "adopt", "network": NETWORK, "tls": False, "os": "debian",
                    "etcd_prefix": prefix, "backend": backend},
        "hosts": [{"name": n, "address": h.address, "roles": ["etcd", "node"] if n == "node1"
                   else ["node"]} for n, h in lab.hosts.items()],
    }  # fmt: skip
    return parse_inventory(doc, Path("/nonexistent"))[0]


def handbuilt(lab: Lab) -> tuple[str, Inventory]:
    """A fresh prefix holding what the runbook and flanneld 0.7 write there, in v2."""
    prefix = f"/adopt-{secrets.token_hex(4)}/network"
    lab.etcdctl("2", "mk", f"{prefix}/config", json.dumps({"Network": NETWORK}))
    for name, subnet in LEASES.items():
        value = json.dumps({"PublicIP": lab.hosts[name].address})
        lab.etcdctl("2", "set", "--ttl", "86400", f"{prefix}/subnets/{subnet}", value)
    for name, subnet in RESERVED.items():
        value = json.dumps({"PublicIP": lab.hosts[name].address})
        lab.etcdctl("2", "set", f"{prefix}/subnets/{subnet}", value)
    return prefix, inventory(lab, prefix)


def rollout(lab: Lab, inv: Inventory, hosts: tuple[str, ...] = ("node1", "node2", "node3")):
    lines: list[str] = []
    session = Session(inv, Reporter(None, echo=lines.append), RolloutOptions(), "test")
    session.remotes = {n: LocalRemote(name=n, enter=lab.hosts[n].enter_argv) for n in hosts}  # type: ignore[misc]
    out = Rollout(session, RolloutOptions())
    out.lines = lines  # type: ignore[attr-defined]
    return out


def v3(lab: Lab, prefix: str) -> dict[str, tuple[dict, int]]:
    """key -> (value, seconds left on its etcd lease; 0: none) of every v3 key under PREFIX."""
    got = json.loads(lab.etcdctl("3", "get", "--prefix", prefix + "/", "-w", "json").stdout)
    out = {}
    for kv in got.get("kvs") or []:
        key, value = base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]).decode()
        ttl = 0
        if kv.get("lease"):
            doc = lab.etcdctl("3", "lease", "timetolive", f"{kv['lease']:x}", "-w", "json").stdout
            ttl = json.loads(doc)["ttl"]
        out[key] = (json.loads(value), ttl)
    return out


def test_import_refusal_rerun_and_drop(lab: Lab, tmp_path: Path, monkeypatch) -> None:
    prefix, inv = handbuilt(lab)
    ip = {n: h.address for n, h in lab.hosts.items()}
    r = rollout(lab, inv)
    phase = ImportV2()
    preview = phase.preview(r)  # what `plan` shows: every write, none made
    assert preview is not None and preview.changes == 4 and v3(lab, prefix) == {}
    phase.run(r)
    assert phase.plan is not None and phase.plan.writes == preview.writes
    keys = v3(lab, prefix)
    assert keys[f"{prefix}/config"] == ({"Network": NETWORK, "Backend": {"Type": "udp"}}, 0)
    for name, subnet in LEASES.items():
        value, ttl = keys[f"{prefix}/subnets/{subnet}"]
        assert value == {"PublicIP": ip[name], "BackendType": "udp"}
        assert 86400 - 60 <= ttl <= 86400  # its own 24 h etcd lease
    assert keys[f"{prefix}/subnets/{RESERVED['node3']}"] == ({"PublicIP": ip["node3"],
                                                              "BackendType": "udp"}, 0)  # fmt: skip
    assert len(keys) == 4 and r.report.total_changes == 4
    leases = {json.dumps(v[0]) for k, v in keys.items() if v[1]}
    assert len(leases) == 2

    again = rollout(lab, inv)
    ImportV2().run(again)
    assert again.report.total_changes == 0
    assert v3(lab, prefix).keys() == keys.keys()

    # A v3 key of another PublicIP where a v2 lease wants node2's subnet: refused, nothing written.
    node2_key = f"{prefix}/subnets/{LEASES['node2']}"
    lab.etcdctl("3", "del", node2_key)
    lab.etcdctl("3", "put", node2_key, json.dumps({"PublicIP": "192.168.255.250"}))
    with pytest.raises(ImportRefused, match=f"etcd v3 key {node2_key} belongs to PublicIP "
                       "192.168.255.250") as err:  # fmt: skip
        ImportV2().run(rollout(lab, inv))
    assert err.value.code == 4 and "ETCDCTL_API=3 etcdctl del" in str(err.value)
    assert v3(lab, prefix)[node2_key][0] == {"PublicIP": "192.168.255.250"}
    lab.etcdctl("3", "del", node2_key)  # the way forward the message names
    resumed = rollout(lab, inv)
    ImportV2().run(resumed)
    assert resumed.report.total_changes == 1
    assert v3(lab, prefix)[node2_key][0] == {"PublicIP": ip["node2"], "BackendType": "udp"}

    # DropV2: kept while a flanneld runs anywhere, then saved and deleted.
    monkeypatch.setenv("OVERLAYCTL_STATE_DIR", str(tmp_path))
    before = lab.etcdctl("2", "get", f"{prefix}/subnets/{LEASES['node1']}").stdout
    dump_before = v2_remote.read_v2(LocalRemote(enter=lab.hosts["node1"].enter_argv), inv)
    fake = lab.hosts["node3"].base / "flanneld"
    shutil.copy("/bin/sleep", fake)
    flanneld = lab.hosts["node3"].popen([str(fake), "300"])
    try:
        with pytest.raises(OverlayctlError, match="flanneld may still run on node3 "):
            DropV2().run(rollout(lab, inv))
        assert lab.etcdctl("2", "get", f"{prefix}/subnets/{LEASES['node1']}").stdout == before
    finally:
        _kill_child(flanneld)
    unknown = rollout(lab, inv, hosts=("node1", "node2"))  # node3 out of the run: unknown
    with pytest.raises(OverlayctlError, match="may still run on node3 "):
        DropV2().run(unknown)

    dropped = rollout(lab, inv)
    drop = DropV2()
    drop.run(dropped)
    assert drop.saved == tmp_path / "adopt" / "adopt" / "v2-dump.json", dropped.lines  # type: ignore[attr-defined]
    saved = parse_dump(drop.saved.read_text(), prefix)
    assert _same(saved.leases) == _same(parse_dump(dump_before.text, prefix).leases)
    assert len(saved.leases) == 3 and saved.config_raw == json.dumps({"Network": NETWORK})
    assert dropped.report.total_changes == 6  # config, 3 subnets, subnets/, the prefix itself
    node1 = LocalRemote(enter=lab.hosts["node1"].enter_argv)
    assert v2_remote.read_v2(node1, inv).state == "absent"
    assert lab.etcdctl("2", "ls", prefix, check=False).returncode != 0
    assert v3(lab, prefix).keys() == keys.keys()  # v3 untouched
    again = rollout(lab, inv)
    DropV2().run(again)
    assert again.report.total_changes == 0
    assert any("nothing to drop" in x for x in again.lines)  # type: ignore[attr-defined]


def test_a_key_written_meanwhile_is_left_alone_and_its_lease_revoked(lab: Lab) -> None:
    prefix, inv = handbuilt(lab)
    node1 = LocalRemote(name="node1", enter=lab.hosts["node1"].enter_argv)
    plan = decide(parse_dump(v2_remote.read_v2(node1, inv).text, prefix), inv, [])
    raced = f"{prefix}/subnets/{LEASES['node2']}"
    other = json.dumps({"PublicIP": "192.168.255.250"})
    lab.etcdctl("3", "put", raced, other)  # after the decision, before the writes
    leases_before = lab.etcdctl("3", "lease", "list").stdout.count("\n")
    assert v2_remote.apply(node1, inv, plan.writes) == 3  # config, node1's lease, the reservation
    keys = v3(lab, prefix)
    assert len(keys) == 4 and keys[f"{prefix}/subnets/{LEASES['node1']}"][1] > 86000
    assert keys[raced] == (json.loads(other), 0)
    assert lab.etcdctl("3", "lease", "list").stdout.count("\n") == leases_before + 1
    with pytest.raises(ImportRefused, match=f"etcd v3 key {raced} belongs to PublicIP"):
        ImportV2().run(rollout(lab, inv))  # the re-run says what is wrong


def test_a_drop_cut_short_resumes(lab: Lab, tmp_path: Path, monkeypatch) -> None:
    prefix, inv = handbuilt(lab)
    ImportV2().run(rollout(lab, inv))
    monkeypatch.setenv("OVERLAYCTL_STATE_DIR", str(tmp_path))
    node1 = LocalRemote(name="node1", enter=lab.hosts["node1"].enter_argv)
    v2 = parse_dump(v2_remote.read_v2(node1, inv).text, prefix)
    # Cut after the first lease: its order puts every lease before the config.
    first = dataclasses.replace(v2, nodes=tuple(n for n in v2.nodes if n.key == v2.leases[0].key))
    assert v2_remote.drop(node1, inv, first) == v2_remote.Dropped(1, 0, ())
    again = rollout(lab, inv)
    ImportV2().run(again)  # the rest still reads as flanneld's: nothing to write, no refusal
    assert again.report.total_changes == 0
    for lease in v2.leases[1:]:  # cut after the last lease: the config and directories left
        lab.etcdctl("2", "rm", lease.key)
    ImportV2().run(rollout(lab, inv))
    drop = rollout(lab, inv)
    DropV2().run(drop)
    assert drop.report.total_changes == 3  # the config, subnets/ and the prefix
    assert v2_remote.read_v2(node1, inv).state == "absent"


def test_udp_agents_take_the_imported_lease_and_reservation(lab: Lab) -> None:
    prefix, inv = handbuilt(lab)
    ImportV2().run(rollout(lab, inv))
    procs: list[subprocess.Popen] = []
    try:
        for name in ("node2", "node3"):
            start_agent(lab.hosts[name], lab.url, procs, f"--etcd-prefix={prefix}",
                        "--public-ip=" + lab.hosts[name].address)  # fmt: skip
        for name, subnet in (("node2", LEASES["node2"]), ("node3", RESERVED["node3"])):
            host = lab.hosts[name]
            env = host.base / "subnet.env"
            text = wait_for(lambda e=env: e.exists() and e.read_text(), 30,
                            f"{name}'s subnet.env ({agent_log(host)[-1500:]})")  # fmt: skip
            want = subnet.replace(".0-", ".1/")
            assert f"FLANNEL_SUBNET={want}\n" in text, (name, text)
            assert "FLANNEL_MTU=1472\n" in text  # udp on a 1500 LAN, as flanneld 0.7
        keys = v3(lab, prefix)
        subnets = {k: v for k, v in keys.items() if "/subnets/" in k}
        assert len(subnets) == 3  # no new key: each agent took its imported one
        assert (
            subnets[f"{prefix}/subnets/{LEASES['node2']}"][0]["PublicIP"]
            == lab.hosts["node2"].address
        )
        assert subnets[f"{prefix}/subnets/{RESERVED['node3']}"][1] == 0  # still a reservation
    finally:
        for proc in procs:
            _kill_child(proc)


def test_the_dump_script_tells_absent_off_and_unreachable_and_keeps_changed_keys(lab: Lab) -> None:
    prefix, inv = handbuilt(lab)
    node1 = LocalRemote(name="node1", enter=lab.hosts["node1"].enter_argv)
    read = v2_remote.read_v2(node1, inv)
    assert read.state == "found"
    v2 = parse_dump(read.text, prefix)
    assert v2.leases[0].ttl is not None and 86000 < v2.leases[0].ttl <= 86400
    assert v2_remote.read_v2(node1, inventory(lab, "/nothing-here/network")).state == "absent"
    refused = "node1: reading etcd's v2 keys failed: no etcd endpoint answered: http://127.0.0.1:9"
    with pytest.raises(OverlayctlError, match=re.escape(refused)):
        v2_remote.read_v2(node1, inv, ["http://127.0.0.1:9"])

    # A key flanneld renewed after the dump is kept, and named; the rest goes.
    renewed = f"{prefix}/subnets/{LEASES['node1']}"
    value = json.dumps({"PublicIP": lab.hosts["node1"].address})
    lab.etcdctl("2", "set", "--ttl", "86400", "--swap-with-value", value, renewed, value)
    dropped = v2_remote.drop(node1, inv, v2)
    assert dropped is not None and dropped.kept[0] == (renewed, "changed since the dump")
    assert dropped.deleted == 3  # config and the other two subnets; subnets/ is not empty
    assert [k for k, _ in dropped.kept] == [renewed, f"{prefix}/subnets", prefix]

    # v2 off (etcd 3.4's default): said as such, and ImportV2 has nothing to import.
    _restart_etcd(lab)
    try:
        assert v2_remote.read_v2(node1, inv).state == "off"
        r = rollout(lab, inv)
        ImportV2().run(r)
        assert any("the v2 API is off on node1" in x for x in r.lines)  # type: ignore[attr-defined]
        assert r.report.total_changes == 0
    finally:
        _restart_etcd(lab, "--enable-v2")
    assert v2_remote.read_v2(node1, inv).state == "found"  # the data survived, v2 back on


class V2Server(EtcdServer):
    """conftest's etcd on 127.0.0.1 with the v2 API on."""

    def command(self) -> list[str]:
        return [*super().command(), "--enable-v2"]


def test_the_dump_script_speaks_https_with_a_client_certificate(tmp_path: Path) -> None:
    if not ETCD_BIN:
        pytest.skip("no etcd binary")
    _files, tls = pki_tls(tmp_path / "state")
    server = V2Server(tmp_path / "etcd", tls=tls)
    server.workdir.mkdir()
    server.start()
    certs = {"ca": tls["ca"], "cert": tls["client_cert"], "key": tls["client_key"]}

    def dump(url: str, tls: dict | None) -> subprocess.CompletedProcess:
        params = {"mode": "dump", "endpoints": [url], "prefix": "/atomic.io/network", "tls": tls,
                  "timeout": 3}  # fmt: skip
        return subprocess.run(v2_remote.DUMP.argv(json.dumps(params)), capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip

    try:
        v2 = ("env", "ETCDCTL_API=2", "etcdctl", f"--endpoints={server.url}",
              f"--ca-file={tls['ca']}", f"--cert-file={tls['client_cert']}",
              f"--key-file={tls['client_key']}")  # fmt: skip
        subprocess.run([*v2, "mk", "/atomic.io/network/config", json.dumps({"Network": NETWORK})],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        got = dump(server.url, certs)
        assert got.returncode == 0, got.stderr
        assert parse_dump(got.stdout, "/atomic.io/network").config_raw == json.dumps(
            {"Network": NETWORK}
        )
        no_cert = dump(server.url, None)  # etcd asks for a client certificate: no answer
        assert no_cert.returncode == v2_remote.UNREACHABLE, no_cert.stderr
        plain = dump(server.url.replace("https:", "http:"), None)  # http to the TLS port
        assert plain.returncode == v2_remote.UNREACHABLE
        assert "closed connection without response" in plain.stderr
    finally:
        server.stop()


def _same(leases: tuple[V2Lease, ...]) -> list[tuple]:
    """What a lease is, but the TTL left (it runs on between two reads)."""
    return [(x.key, x.public_ip, x.expiration, x.modified_index) for x in leases]


def _kill_child(proc: subprocess.Popen) -> None:
    """Kill what PROC (nsenter) runs inside its host, by PID, and let nsenter reap it (killed
    first, it would leave a zombie that the host's init never reaps, and pgrep still sees)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    with contextlib.suppress(OSError):
        for pid in children.read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _restart_etcd(lab: Lab, *extra: str) -> None:
    """node1's etcd stopped (by PID) and started again on the same data with EXTRA flags."""
    old = lab.procs.pop(0)
    _kill_child(old)
    start_etcd(lab.hosts["node1"], lab.procs, "vxlan", *extra)
