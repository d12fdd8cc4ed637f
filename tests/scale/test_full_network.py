"""A full /16 of agents, as benchmarks/scale.py runs it: 254 agents at once, the 255th
joining, a 256th finding the network full, etcd restarted under all of them.

The benchmark measures and reports; this test holds what must be true whatever the machine's
speed: no duplicate subnet, every host with a route to each of its 254 peers, the 256th agent
refused with one clear line, retrying at a bounded rate and taking a freed subnet, and an etcd
restart costing each agent at most one re-read, with every lease and route kept. Its own tier
(`make test-scale`, alone: 255 agents take both cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ETCD_BIN

pytestmark = [pytest.mark.lab, pytest.mark.scale, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not ETCD_BIN, reason="no etcd binary")
def test_255_agents_fill_the_network_and_survive_an_etcd_restart() -> None:
    argv = [
        sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--agents", "255",
        "--idle", "10", "--exec-runs", "3", "--agent-install", "dev", "--timeout", "300",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False)
    print(proc.stdout[-6000:])
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, f"no JSON line (exit {proc.returncode}): {proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["agents"] == 255 and result["duplicates"] == 0
    assert result["routes_missing"] == 0 and result["peer_routes_wrong"] == 0
    full = result["full_network"]
    assert full["line"] == "no free subnet in 172.21.0.0/16 (255 leased)", full
    assert 1 <= full["attempts_5s"] <= 4, full  # 1, 2, 4 s apart: a bounded rate
    assert full.get("ready_after_free_s") is not None, full
    assert result["etcd_restart_ok"], result
    assert 0 <= result["etcd_restart_resyncs_max"] <= 1
    assert proc.returncode == 0, proc.stderr[-3000:]
