"""PeerTls's readers (phases/adopt_peers.py): what the running etcd listens on, from its
environment and command line (a flag wins; etcd's defaults where neither says), an etcd.conf
value, and the ports taken on a host; and init's Etcd phase after the rounds (R3) asking each
member at the scheme it serves now."""

from __future__ import annotations

from types import SimpleNamespace

from overlayctl import paths as hp
from overlayctl.phases.adopt_peers import file_value, listening_ports, read_running
from overlayctl.phases.etcd import Etcd
from overlayctl.plan.changes import DesiredFile, FileChange
from overlayctl.plan.facts import RemoteFile
from overlayctl.plan.render import etcd_conf, render_host
from overlayctl.remote.ssh import RunResult
from tests.unit.overlayctl.test_render import make_inventory


def test_the_running_listeners_come_from_the_environment_and_a_flag_wins() -> None:
    out = RunResult(0, 'ETCD_LISTEN_PEER_URLS=http://0.0.0.0:2380\n'
                    'ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001\n'
                    'ARG=/usr/bin/etcd\n', "")  # fmt: skip
    assert read_running(out) == {
        "peer": "http://0.0.0.0:2380", "client": "http://0.0.0.0:2379,http://0.0.0.0:4001",
    }  # fmt: skip
    flags = RunResult(0, "ETCD_LISTEN_PEER_URLS=http://a:2380\nARG=/usr/bin/etcd\n"
                      "ARG=--listen-peer-urls\nARG=https://a:2380\n", "")  # fmt: skip
    assert read_running(flags) == {"peer": "https://a:2380", "client": "http://localhost:2379"}
    assert read_running(RunResult(0, "ARG=--listen-client-urls=https://a:2379\n", "")) == {
        "peer": "http://localhost:2380", "client": "https://a:2379",
    }  # fmt: skip


def test_etcd_not_running_reads_as_none() -> None:
    assert read_running(RunResult(3, "", "")) is None


def test_an_etcd_conf_value_quoted_or_not_and_comments_skipped() -> None:
    conf = (
        b'#ETCD_LISTEN_PEER_URLS="x"\nETCD_LISTEN_PEER_URLS="http://1.2.3.4:2380"\nETCD_NAME=n1\n'
    )
    assert file_value(conf, "ETCD_LISTEN_PEER_URLS") == "http://1.2.3.4:2380"
    assert file_value(conf, "ETCD_NAME") == "n1"
    assert file_value(conf, "ETCD_ENABLE_V2") is None and file_value(None, "ETCD_NAME") is None


def test_ports_taken_from_ss() -> None:
    out = ("LISTEN 0 4096 0.0.0.0:2380 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*\n"
           "LISTEN 0 4096 127.0.0.1:2382 0.0.0.0:*\n")  # fmt: skip
    assert listening_ports(out) == {2380, 22, 2382}


def test_r3_health_asks_a_member_not_restarted_yet_at_its_old_scheme() -> None:
    """init's Etcd phase after the rounds: node1 restarted on https clients, node2 not yet
    (its etcd.conf on disk is new, what runs is still the interim one with http clients)."""
    inv = make_inventory(2, tls=True, legacy=False, os_family="debian")
    interim = etcd_conf(inv, inv.hosts[1], "peers_tls_temp", 2382)
    final = render_host(inv, inv.hosts[1])[hp.ETCD_CONF]
    change = FileChange("etcd", hp.ETCD_CONF, DesiredFile(final.content, 0o644, "root"),
                        RemoteFile(hp.ETCD_CONF, interim))  # fmt: skip
    targets = {h.name: SimpleNamespace(plan=SimpleNamespace(files=[change])) for h in inv.hosts}
    rollout = SimpleNamespace(inv=inv, targets=targets)
    phase = Etcd()
    assert phase.endpoints(rollout) == {  # type: ignore[arg-type]
        "h0": "http://10.1.0.10:2379", "h1": "http://10.1.0.11:2379",
    }  # fmt: skip
    phase.restarted.add("h0")
    assert phase.endpoints(rollout) == {  # type: ignore[arg-type]
        "h0": "https://10.1.0.10:2379", "h1": "http://10.1.0.11:2379",
    }  # fmt: skip
    phase.restarted.add("h1")
    assert set(phase.endpoints(rollout).values()) == {  # type: ignore[arg-type]
        "https://10.1.0.10:2379", "https://10.1.0.11:2379",
    }  # fmt: skip
