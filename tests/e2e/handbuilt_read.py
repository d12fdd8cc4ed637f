"""Reading a hand-built cluster back (tests/e2e/handbuilt.py makes it): shell helpers, the v2
dump, leases, containers, and `snapshot`, the state a command that refuses must leave exactly
as it was (docs/design/adopt.md section 4: "every file's hash, units, member list and the v2
dump unchanged")."""

from __future__ import annotations

import json
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from overlayctl.lab import state
from tests.e2e.handbuilt_files import ETCD_CONF, PREFIX, SYSCONFIG
from tests.labtools import on

# etcdctl as the runbook's operator types it on a member (clients listen on 0.0.0.0, plain http).
ETCDCTL2 = "ETCDCTL_API=2 etcdctl --endpoints=http://127.0.0.1:2379"
ETCDCTL3 = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379"
# Units whose state (active, enabled, MainPID: a restart changes it) a refusal must not touch.
UNITS = ("etcd", "flanneld", "docker", "overlay-agent")


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    started_at: str  # docker's State.StartedAt: changes when the container restarts
    ip: str


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


def run_all(lab: state.LabState, commands: dict[str, str]) -> dict[str, str]:
    """`on_all`, every command required to succeed: HOST -> stdout."""
    results = on_all(lab, commands)
    failed = {h: (r.returncode, r.stderr[-500:]) for h, r in results.items() if r.returncode}
    assert not failed, f"failed: {failed}"
    return {host: result.stdout for host, result in results.items()}


def v2_dump(lab: state.LabState, host: str, prefix: str = PREFIX) -> dict:
    """`GET /v2/keys<PREFIX>?recursive=true` on HOST's own plain-http client URL: the whole
    v2 tree, TTLs included (python3's urllib: curl is not on every host)."""
    url = f"http://127.0.0.1:2379/v2/keys{prefix}?recursive=true"
    script = f"import sys,urllib.request as u; sys.stdout.write(u.urlopen({url!r}).read().decode())"
    return json.loads(run(lab, host, f"python3 -c {shlex.quote(script)}"))


def v2_leases(dump: dict) -> dict[str, dict]:
    """PublicIP -> the lease's v2 node (key, value, ttl, expiration, ...) from a `v2_dump`."""
    found = {}
    for folder in dump["node"].get("nodes", []):
        if folder["key"].endswith("/subnets"):
            for node in folder.get("nodes", []):
                found[json.loads(node["value"])["PublicIP"]] = node
    return found


def containers(lab: state.LabState, host: str) -> dict[str, Container]:
    """Every container on HOST, running or not: name -> (ID, StartedAt, IP)."""
    fmt = "{{.Name}} {{.Id}} {{.State.StartedAt}} {{.NetworkSettings.IPAddress}}"
    out = run(lab, host, f"docker ps -aq | xargs -r docker inspect -f '{fmt}'")
    found = {}
    for line in out.splitlines():
        name, cid, started, *ip = line.split()
        found[name.lstrip("/")] = Container(name.lstrip("/"), cid, started, ip[0] if ip else "")
    return found


def member_list(lab: state.LabState, host: str) -> list[dict]:
    """`member list -w json`'s members (ID as hex), through HOST's plain-http client URL."""
    doc = json.loads(run(lab, host, f"{ETCDCTL3} member list -w json"))
    return [{**m, "ID": f"{m['ID']:x}"} for m in doc["members"]]


# Per host, one round trip: sha256 of every file that configures etcd, flanneld and docker
# (docker's and etcd's unit files and drop-ins as systemd resolves them), then each unit's state.
_SNAPSHOT = r"""
files="%(files)s"
for unit in etcd docker flanneld; do
    files="$files $(systemctl show -p FragmentPath -p DropInPaths --value $unit | tr '\n' ' ')"
done
for f in $files; do
    if [ -e "$f" ]; then h=$(sha256sum < "$f" | cut -c1-16); else h=missing; fi
    echo "file $f $h"
done
for unit in %(units)s; do
    echo "unit $unit $(systemctl show -p ActiveState -p UnitFileState -p MainPID --value $unit \
        | tr '\n' ' ')"
done
echo "links $(ip -o link show | awk -F': ' '{print $2}' | grep -v '^veth' | sort | tr '\n' ' ')"
"""


def snapshot(lab: state.LabState, names: list[str], prefix: str = PREFIX) -> dict[str, object]:
    """What a refusing command must leave unchanged: per host the hashes of etcd.conf,
    sysconfig/flanneld, the etcd, docker and flanneld units with their drop-ins, the units'
    states and MainPIDs, the network devices; for the cluster `member list` and the v2 tree
    (keys, values, and whether each has a TTL; the TTLs themselves run down). Compare with ==."""
    script = _SNAPSHOT % {"files": f"{ETCD_CONF} {SYSCONFIG}", "units": " ".join(UNITS)}
    found: dict[str, object] = {
        host: sorted(set(out.splitlines()) - {""})
        for host, out in run_all(lab, {h: script for h in names}).items()
    }
    found["members"] = member_list(lab, names[0])
    found["v2"] = _flatten(v2_dump(lab, names[0], prefix)["node"])
    return found


def _flatten(node: dict) -> dict[str, tuple[str | None, bool]]:
    """KEY -> (value, has a TTL) for every node under NODE."""
    found = {node["key"]: (node.get("value"), "ttl" in node)}
    for child in node.get("nodes", []):
        found.update(_flatten(child))
    return found
