"""etcd-found.sh (the facts phase's read of the etcd running on the first member) against a real
etcd 3.4, started the way a hand-built cluster may start it: client URL and v2 by flags, peer
URL from the environment, v2 on with the runbook's config written by `etcdctl mk`.

The script finds etcd by scanning /proc, so etcd and the script run in a PID namespace of the
test's own (`unshare --pid --fork --mount-proc`): no other etcd on this machine can be found,
and etcd ends with the namespace. Everything listens and talks on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from overlayctl.etcd import v2_remote
from overlayctl.inventory import parse_inventory
from overlayctl.phases.facts import ETCD_FOUND, v2_found
from overlayctl.plan.handbuilt import HandBuilt, parse_etcd
from tests.integration.conftest import ETCD_BIN, _require_etcd, free_port

PREFIX = "/atomic.io/network"
START = """
# a decoy first (a lower PID): any process may call itself etcd; only etcd.service's counts
mkdir -p "$DATA.decoy" && cp /bin/sleep "$DATA.decoy/etcd" && "$DATA.decoy/etcd" 60 &
"$ETCD" --name t --data-dir "$DATA" --listen-client-urls "$CLIENT" --advertise-client-urls \
  "$CLIENT" --initial-advertise-peer-urls "$PEER" --initial-cluster "t=$PEER" --enable-v2 \
  >"$DATA.log" 2>&1 &
echo $! >"$DATA.pid"
i=0
until ETCDCTL_API=2 etcdctl --endpoints="$CLIENT" mk "$PREFIX/config" "$CONFIG" >/dev/null 2>&1
do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "etcd did not start" >&2; cat "$DATA.log" >&2; exit 1; }
  sleep 0.1
done
exec "$@"
"""


def test_etcd_found_reads_the_etcd_as_it_runs(tmp_path: Path) -> None:
    _require_etcd()
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    doc = {"cluster": {"name": "t", "network": "172.21.0.0/16", "etcd_prefix": PREFIX,
                       "tls": False}, "hosts": [{"name": "n1", "address": "10.0.0.1"}]}  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    dump, _label = v2_remote.dump_command(inv, [client])
    found_argv = ETCD_FOUND.argv("/nonexistent/ca", "/nonexistent/crt", "/nonexistent/key", *dump)
    # The script asks systemd for etcd.service's MainPID: here a stand-in systemctl answers with
    # the test's etcd (it runs in a PID namespace without systemd).
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "systemctl").write_text(f'#!/bin/sh\ncat "{tmp_path / "data.pid"}"\n')
    (stub / "systemctl").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/sbin:/usr/bin:/sbin:/bin", "ETCD": ETCD_BIN or "etcd",
           "DATA": str(tmp_path / "data"), "CLIENT": client, "PEER": peer, "PREFIX": PREFIX,
           "CONFIG": '{"Network":"172.21.0.0/16"}',
           "ETCD_LISTEN_PEER_URLS": peer}  # fmt: skip
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", START, "sh", *found_argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    etcd = parse_etcd(done.stdout)
    assert etcd.client_url == client  # from the --listen-client-urls flag (its own word)
    assert etcd.peer_listen == (peer,)  # from the environment
    assert etcd.members is not None and [m.peer_urls for m in etcd.members] == [(peer,)]
    assert etcd.v2_exit == 0  # --enable-v2, a bare bool flag: the dump ran
    # the running binary's own version (adopt refuses etcd older than 3.4)
    version = subprocess.run(
        [ETCD_BIN or "etcd", "--version"], capture_output=True, text=True, check=True
    )
    assert f"etcd Version: {etcd.version}\n" in version.stdout and etcd.version.startswith("3.")
    v2 = v2_found(etcd, "n1", PREFIX)
    assert v2.config == '{"Network":"172.21.0.0/16"}' and v2.sign() == f"{PREFIX}/config in " \
        "the v2 API"  # fmt: skip
    # read through this member, its membership is what it serves: no sign of issue 21's state
    assert HandBuilt(etcd=etcd, v2=v2, via="n1", via_address="127.0.0.1").cluster_signs() == [
        v2.sign()
    ]
    assert json.loads(etcd.v2_text)["node"]["key"] == PREFIX
