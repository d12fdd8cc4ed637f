"""The agent's sandboxed unit (issue #17 item 4) lets it write where agent_options put its
files, and nowhere else: the folder is made by root before the sandbox, then writable."""

from __future__ import annotations

from pathlib import Path

from overlayctl import paths as hp
from overlayctl.inventory import parse_inventory
from overlayctl.plan.render import render_host


def unit(tmp_path: Path, options: list[str]) -> str:
    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "os": "debian",
                    "agent_options": options},
        "hosts": [{"name": "n1", "address": "10.0.0.1"}],
    }  # fmt: skip
    inv, _ = parse_inventory(doc, tmp_path, source=tmp_path / "cluster.yaml")
    return render_host(inv, inv.hosts[0])[hp.AGENT_UNIT].content.decode()


def test_only_the_agents_own_folders_are_writable(tmp_path: Path) -> None:
    plain = unit(tmp_path, [])
    writable = [ln for ln in plain.splitlines() if ln.startswith("ReadWritePaths=")]
    assert writable == ["ReadWritePaths=-/run/xtables.lock"]
    assert "RuntimeDirectory=flannel" in plain and "ProtectSystem=strict" in plain
    moved = unit(tmp_path, ["--docker-opts-file=/run/docker-net/opts"])
    writable = [ln for ln in moved.splitlines() if ln.startswith("ReadWritePaths=")]
    assert writable == ["ReadWritePaths=-/run/xtables.lock", "ReadWritePaths=-/run/docker-net"]
    lines = moved.splitlines()
    made = lines.index("ExecStartPre=+/bin/mkdir -p /run/docker-net")
    assert lines[made + 1] == "ReadWritePaths=-/run/docker-net"
