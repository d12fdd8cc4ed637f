"""adopt's interim etcd.conf stages (render.etcd_conf): what the peer-TLS stepper reads back
from the file is the stage it asked for, clients stay on plain http on every runbook port, v2
stays on, the peer certificate is there and no client certificate is asked for."""

from __future__ import annotations

import re

import pytest

from overlayctl import paths as hp
from overlayctl.errors import BadInput
from overlayctl.etcd.peer_tls import Ports, Stage, classify
from overlayctl.plan.render import etcd_conf, render_host
from tests.unit.overlayctl.test_render import make_inventory


def values(conf: bytes) -> dict[str, str]:
    return dict(re.findall(r'^(ETCD_[A-Z0-9_]+)="([^"]*)"$', conf.decode(), re.M))


@pytest.mark.parametrize("stage", [Stage.DUAL, Stage.TLS_TEMP])
def test_an_interim_stage_reads_back_as_itself(stage: Stage) -> None:
    inv = make_inventory(2, tls=True, legacy=False, os_family="debian")
    host = inv.hosts[1]
    got = values(etcd_conf(inv, host, stage.value, 2382))
    assert classify(got["ETCD_LISTEN_PEER_URLS"], Ports(2380, 2382)) is stage
    assert got["ETCD_LISTEN_CLIENT_URLS"] == (
        "http://10.1.0.11:2379,http://127.0.0.1:2379,http://10.1.0.11:4001,http://127.0.0.1:4001"
    )
    assert got["ETCD_ADVERTISE_CLIENT_URLS"] == "http://10.1.0.11:2379,http://10.1.0.11:4001"
    assert got["ETCD_ENABLE_V2"] == "true"
    assert got["ETCD_PEER_CERT_FILE"] == hp.ETCD_PEER_CERT
    assert got["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert got["ETCD_PEER_CERT_ALLOWED_CN"] == hp.ETCD_PEER_CN
    assert "ETCD_CLIENT_CERT_AUTH" not in got and "ETCD_CERT_FILE" not in got
    assert got["ETCD_DATA_DIR"] == "/var/lib/etcd/h1.etcd"
    assert got["ETCD_INITIAL_CLUSTER_STATE"] == "existing"  # never a new cluster from here


def test_the_final_file_is_init_s_without_v2_and_reads_as_the_last_stage() -> None:
    inv = make_inventory(2, tls=True, legacy=False, os_family="debian")
    got = values(render_host(inv, inv.hosts[0])[hp.ETCD_CONF].content)
    assert "ETCD_ENABLE_V2" not in got
    assert classify(got["ETCD_LISTEN_PEER_URLS"], Ports(2380, 2382)) is Stage.TLS
    assert got["ETCD_LISTEN_CLIENT_URLS"].startswith("https://")


def test_an_interim_stage_needs_tls_and_a_known_name() -> None:
    inv = make_inventory(2, tls=False, legacy=False, os_family="debian")
    with pytest.raises(BadInput):
        etcd_conf(inv, inv.hosts[0], "peers_dual", 2382)
    inv = make_inventory(2, tls=True, legacy=False, os_family="debian")
    with pytest.raises(BadInput):
        etcd_conf(inv, inv.hosts[0], "final", 2382)
