"""etcd identities and roles on a full lab (issue #17 item 1): node1-3 etcd members, node4 an
agent-only host, vxlan. With node4's own credentials (its certificate and password, through the
agent's own etcd client) the config cannot be written and no member added, while a lease under
subnets/ can; node4 holds no admin identity; no client certificate works on the peer port; etcd
listens on no wildcard address; `certs revoke node4` refuses it at once while node1-3 go on; a
re-run changes nothing; and a cluster whose auth was switched off and its users removed (as
before this version) converges back without an agent losing its lease.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.lab import labs, state
from tests.e2e.conftest import init_or_fail, make_lab
from tests.labtools import ETCDCTL, cli, on

pytestmark = [pytest.mark.lab, pytest.mark.full]
PKI = "/etc/overlayctl/pki"
PREFIX = "/coreos.com/network"
MEMBERS = ["node1", "node2", "node3"]
EVERY = [*MEMBERS, "node4"]

# What an agent does, with the agent's own etcd client (the JSON gateway, its default transport)
# and the host's own identity: certificate, user = host name, password from its 0600 file. Each
# step prints "ok" or the error's class; the JSON document has one entry per step.
AS_AGENT = r"""
import json, sys
from agent.etcd import client_class, EtcdAuthError, EtcdError
host, endpoints, steps = sys.argv[1], sys.argv[2].split(","), sys.argv[3:-1]
pki = "/etc/overlayctl/pki"
password = open(pki + "/etcd-agent.password").read().strip()
cli = client_class("http")(endpoints, ca_file=pki + "/ca.crt", cert_file=pki + "/etcd-client.crt",
                           key_file=pki + "/etcd-client.key", username=host, password=password)
out = {}
for step in steps:
    verb, _, key = step.partition(":")
    try:
        if verb == "get":
            cli.get(key)
        elif verb == "put":
            cli.put(key, b'{"Network":"10.9.0.0/16"}')
        elif verb == "lease":  # a short-lived lease of this host's under KEY, revoked at once
            lease, _ = cli.lease_grant(10)
            value = json.dumps({"PublicIP": sys.argv[-1], "BackendType": "vxlan"})
            assert cli.create(key, value.encode(), lease_id=lease)
            cli.lease_revoke(lease)
        elif verb == "keep":  # KEY=IP: a vxlan lease naming IP, left for its 60 s TTL
            key, _, ip = key.partition("=")
            lease, _ = cli.lease_grant(60)
            data = {"VNI": 1, "VtepMAC": "02:00:00:00:fa:01"}
            value = json.dumps({"PublicIP": ip, "BackendType": "vxlan", "BackendData": data})
            assert cli.create(key, value.encode(), lease_id=lease)
        out[step] = "ok"
    except EtcdAuthError as exc:
        out[step] = "auth: " + str(exc)
    except EtcdError as exc:
        out[step] = "error: " + str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[state.LabState, Path]]:
    lab, _, every = make_lab(4, "vxlan", prefix="se")
    try:
        first = init_or_fail(lab, every)
        assert "authentication enabled" in first.stdout, first.stdout
        yield lab, every
    finally:
        labs.down(lab.name, progress=lambda _m: None)


def endpoints(lab: state.LabState) -> str:
    return ",".join(f"https://{lab.host(h).address}:2379" for h in MEMBERS)


def as_agent(lab: state.LabState, host: str, *steps: str) -> dict[str, str]:
    """STEPS run on HOST as its agent would, with HOST's credentials -> each one's outcome."""
    py = "/opt/overlay-agent/venv/bin/python"
    args = shlex.join([host, endpoints(lab), *steps, str(lab.host(host).address)])
    result = on(lab, host, f"{py} -c {shlex.quote(AS_AGENT)} {args}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_host_identity_reads_its_config_and_writes_leases_but_nothing_else(cluster) -> None:
    lab, _ = cluster
    got = as_agent(lab, "node4", f"get:{PREFIX}/config", f"lease:{PREFIX}/subnets/172.21.250.0-24",
                   f"put:{PREFIX}/config", f"put:{PREFIX}/other")  # fmt: skip
    assert got[f"get:{PREFIX}/config"] == "ok", got
    assert got[f"lease:{PREFIX}/subnets/172.21.250.0-24"] == "ok", got  # the agent's job
    assert got[f"put:{PREFIX}/config"].startswith("auth: "), got
    assert "permission denied" in got[f"put:{PREFIX}/config"], got
    assert got[f"put:{PREFIX}/other"].startswith("auth: "), got
    # The same through etcdctl (gRPC), as user node4 (password from the environment): no member
    # add. Its certificate alone (no CN: no user) may do nothing at all.
    etcdctl = host_etcdctl(lab)
    add = on(lab, "node4", f"{etcdctl} member add evil --peer-urls=https://192.168.255.250:2380")
    assert add.returncode != 0 and "permission denied" in add.stderr, add.stderr
    put = on(lab, "node4", f"{etcdctl} put {PREFIX}/config x")
    assert put.returncode != 0 and "permission denied" in put.stderr, put.stderr
    assert on(lab, "node4", f"{etcdctl} get {PREFIX}/config").returncode == 0
    anonymous = on(lab, "node4", host_etcdctl(lab, user=False) + f" get {PREFIX}/config")
    assert anonymous.returncode != 0 and "permission denied" in anonymous.stderr, anonymous


def test_a_lease_pointing_outside_the_cluster_is_ignored_by_every_agent(cluster) -> None:
    """With node4's own identity (it may write leases), one lease names a cluster host's address
    and one an address outside the cluster: node1's agent installs the first (so the check can
    fail) and ignores the second (no route), and counts it in /metrics."""
    lab, _ = cluster
    inside, outside = "172.21.250.0/24", "172.21.251.0/24"
    keys = {
        inside: f"{PREFIX}/subnets/172.21.250.0-24",
        outside: f"{PREFIX}/subnets/172.21.251.0-24",
    }
    node4 = lab.host("node4").address
    steps = [f"keep:{keys[inside]}={node4}", f"keep:{keys[outside]}=192.168.255.250"]
    try:
        assert set(as_agent(lab, "node4", *steps).values()) == {"ok"}
        routes = ""
        for _ in range(20):
            routes = on(lab, "node1", "ip -4 route show dev flannel.1").stdout
            if inside in routes:
                break
            time.sleep(0.5)
        assert inside in routes, routes  # a lease naming a cluster host: installed
        time.sleep(2)  # the same watch event batch carried both; give a late one a moment
        routes = on(lab, "node1", "ip -4 route show dev flannel.1").stdout
        assert outside not in routes, routes
        fdb = on(lab, "node1", "bridge fdb show dev flannel.1").stdout
        assert "192.168.255.250" not in fdb, fdb
        metrics = on(lab, "node1", "curl -sS -m 5 http://127.0.0.1:8471/metrics").stdout
        refused = [
            ln for ln in metrics.splitlines() if ln.startswith("overlay_agent_leases_refused")
        ]
        assert refused and float(refused[0].split()[-1]) >= 1, metrics[-1500:]
    finally:
        for key in keys.values():
            on(lab, "node1", f"{ETCDCTL} del {key}")


def host_etcdctl(lab: state.LabState, user: bool = True) -> str:
    """etcdctl on a host with its own certificate and (USER) its user and password, the
    password through the environment (ETCDCTL_USER), never on the command line."""
    env = f"ETCDCTL_USER=$(hostname):$(cat {PKI}/etcd-agent.password) " if user else ""
    return (
        f"{env}etcdctl --endpoints={endpoints(lab)} --cacert={PKI}/ca.crt "
        f"--cert={PKI}/etcd-client.crt --key={PKI}/etcd-client.key --command-timeout=5s"
    )


def test_only_members_hold_the_admin_identity_and_secrets_stay_private(cluster) -> None:
    lab, _ = cluster
    listing = "stat -c '%a %U %n' /etc/overlayctl/pki/* | sort"
    node4 = on(lab, "node4", listing).stdout.splitlines()
    assert [ln for ln in node4 if "etcd-admin" in ln] == [], node4
    assert f"600 root {PKI}/etcd-agent.password" in node4
    assert f"600 root {PKI}/etcd-client.key" in node4
    node1 = on(lab, "node1", listing).stdout.splitlines()
    assert {f"600 root {PKI}/etcd-admin.crt", f"600 root {PKI}/etcd-admin.key"} <= set(node1)
    # Its own certificate: the host's name as UID, and no CN (etcd's gateway refuses one).
    subject = on(lab, "node4", f"openssl x509 -noout -subject -in {PKI}/etcd-client.crt").stdout
    assert subject.replace(" ", "").strip() == "subject=UID=node4", subject
    # The password is in its file only: not in the env file, nor the agent's command line.
    secret = on(lab, "node4", f"cat {PKI}/etcd-agent.password").stdout.strip()
    assert len(secret) >= 40
    seen = on(lab, "node4", "cat /etc/default/overlay-agent /proc/$(systemctl show -p MainPID "
              "--value overlay-agent)/cmdline | tr '\\0' ' '").stdout  # fmt: skip
    assert "--etcd-username=node4" in seen and secret not in seen


def test_no_client_certificate_is_admitted_on_the_peer_port(cluster) -> None:
    """curl with node4's certificate on node1:2380 is refused in the TLS handshake; the same
    request with a peer certificate (on node2, a member) gets the member list."""
    lab, _ = cluster
    url = f"https://{lab.host('node1').address}:2380/members"
    curl = f"curl -sS -m 5 --http1.1 -o /dev/null -w '%{{http_code}}' --cacert {PKI}/ca.crt"
    host_cert = on(lab, "node4", f"{curl} --cert {PKI}/etcd-client.crt --key {PKI}/etcd-client.key "
                   f"{url}")  # fmt: skip
    assert host_cert.returncode != 0 and host_cert.stdout == "000", host_cert  # no HTTP at all
    admin = on(lab, "node2", f"{curl} --cert {PKI}/etcd-admin.crt --key {PKI}/etcd-admin.key {url}")
    assert admin.returncode != 0 and admin.stdout == "000", admin
    peer = on(lab, "node2", f"{curl} --cert {PKI}/etcd-peer.crt --key {PKI}/etcd-peer.key {url}")
    assert peer.returncode == 0 and peer.stdout == "200", peer


def test_etcd_listens_on_the_host_address_and_loopback_only(cluster) -> None:
    lab, _ = cluster
    address = lab.host("node1").address
    listening = on(lab, "node1", "ss -Hltn").stdout.split()
    ports = {a for a in listening if a.endswith((":2379", ":2380"))}
    assert ports == {f"{address}:2379", "127.0.0.1:2379", f"{address}:2380"}, ports


def test_a_rerun_changes_nothing(cluster) -> None:
    lab, every = cluster
    again = cli(lab, "init", "-i", str(every))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "init: 0 changes on 4 hosts" in again.stdout, again.stdout
    assert "unchanged: /coreos.com/network/allowed-public-ips" in again.stdout


def test_revoke_refuses_the_host_at_once_and_init_readmits_it(cluster) -> None:
    lab, every = cluster
    out = cli(lab, "certs", "revoke", "node4", "-i", str(every), "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["user_deleted"] is True, doc
    assert "node4.password" in doc["files_removed"], doc
    # Refused at once, password and certificate alike; node1-3 unaffected.
    got = as_agent(lab, "node4", f"get:{PREFIX}/config")
    assert got[f"get:{PREFIX}/config"].startswith("auth: "), got
    assert on(lab, "node4", f"{host_etcdctl(lab)} get {PREFIX}/config").returncode != 0
    for host in MEMBERS:
        assert as_agent(lab, host, f"get:{PREFIX}/config") == {f"get:{PREFIX}/config": "ok"}
    # Its agent, asked to start again, logs the refusal.
    since = on(lab, "node4", "date +%s").stdout.strip()
    on(lab, "node4", "systemctl restart --no-block overlay-agent")
    log = ""
    for _ in range(30):
        log = on(lab, "node4", f"journalctl -u overlay-agent --since @{since} --no-pager").stdout
        if "authentication failed" in log:
            break
        time.sleep(1)
    assert "authentication failed" in log, log[-2000:]
    # Still in the inventory: the next init says so and gives node4 a new identity.
    back = cli(lab, "init", "-i", str(every))
    assert back.returncode == 0, back.stdout + back.stderr
    assert "node4 was revoked on" in back.stdout and "user node4 added" in back.stdout
    assert as_agent(lab, "node4", f"get:{PREFIX}/config") == {f"get:{PREFIX}/config": "ok"}


def _leases(lab: state.LabState) -> dict[str, str]:
    """subnet key -> lease id, of every lease in etcd (read as root on node1)."""
    out = on(lab, "node1", f"{ETCDCTL} get {PREFIX}/subnets/ --prefix -w json").stdout
    return {kv["key"]: str(kv.get("lease")) for kv in json.loads(out).get("kvs", [])}


def test_a_cluster_without_auth_converges_back_and_no_agent_loses_its_lease(cluster) -> None:
    """As before this version: auth off, no users, no role. init brings them back; the agents
    keep their lease (same key, same etcd lease) all along."""
    lab, every = cluster
    before = _leases(lab)
    assert len(before) == 4, before
    assert on(lab, "node1", f"{ETCDCTL} auth disable").returncode == 0
    for user in [*EVERY, "root"]:
        assert on(lab, "node1", f"{ETCDCTL} user delete {user}").returncode == 0, user
    assert on(lab, "node1", f"{ETCDCTL} role delete overlay-host").returncode == 0
    probe = f"put:{PREFIX}/probe"  # auth is off: node4 may write anything now
    assert as_agent(lab, "node4", probe)[probe] == "ok"
    assert on(lab, "node1", f"{ETCDCTL} del {PREFIX}/probe").returncode == 0
    back = cli(lab, "init", "-i", str(every))
    assert back.returncode == 0, back.stdout + back.stderr
    assert "authentication enabled" in back.stdout, back.stdout
    got = as_agent(lab, "node4", f"put:{PREFIX}/config", f"get:{PREFIX}/config")
    assert got[f"put:{PREFIX}/config"].startswith("auth: ") and got[f"get:{PREFIX}/config"] == "ok"
    assert _leases(lab) == before
    again = cli(lab, "init", "-i", str(every))
    assert "init: 0 changes on 4 hosts" in again.stdout, again.stdout
