"""cluster.agent_options that would leak a secret or widen the root agent's reach are refused.

The options end up in a 0644 env file, the agent's argv and `plan`'s diff (issue #17 item 7):
each refusal is one line naming the field and the option, exit code 2, and nothing is written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from overlayctl.errors import BadInput, ExitCode
from overlayctl.inventory import parse_inventory


def inventory(*options: str) -> dict[str, Any]:
    return {
        "cluster": {"name": "demo", "network": "172.21.0.0/16", "os": "debian",
                    "agent_options": list(options)},
        "hosts": [{"name": "node1", "address": "192.168.255.154"}],
    }  # fmt: skip


REFUSED = [
    ("--etcd-password=hunter2", "cluster.agent_options[1]: --etcd-password would put the "
     "password in the 0644 env file, the agent's command line and plan's diff; keep it in a "
     "root-only file and name it with --etcd-password-file=PATH"),
    ("--etcd_password=x", "cluster.agent_options[1]: --etcd-password would put..."),
    ("--config-file=/etc/overlay.conf", "cluster.agent_options[1]: --config-file would read "
     "options no inventory check sees..."),
    ("--healthz-ip=0.0.0.0", "cluster.agent_options[1]: --healthz-ip=0.0.0.0 is not a loopback "
     "address: the agent's health and metrics are for this host only (127.0.0.1 is the default)"),
    ("--healthz-ip=192.168.255.154", "cluster.agent_options[1]: --healthz-ip=192.168.255.154 is "
     "not a loopback address..."),
    ("--healthz-ip", "cluster.agent_options[1]: --healthz-ip= is not a loopback address..."),
    ("--docker-opts-file=/etc/cron.d/x", "cluster.agent_options[1]: "
     "--docker-opts-file=/etc/cron.d/x is not a file under /run/: the agent writes it as root "
     "(the default is /run/flannel/docker)"),
    ("--docker-opts-file=/run/../etc/cron.d/x", "cluster.agent_options[1]: "
     "--docker-opts-file=/run/../etc/cron.d/x is not a file under /run/..."),
    ("--docker-opts-file=run/flannel/docker", "cluster.agent_options[1]: "
     "--docker-opts-file=run/flannel/docker is not a file under /run/..."),
    ("--subnet-file=/etc/cron.d/x", "cluster.agent_options[1]: --subnet-file is set by "
     "overlayctl from the inventory"),
]  # fmt: skip


@pytest.mark.parametrize(("option", "expected"), REFUSED, ids=[o for o, _ in REFUSED])
def test_refused_with_one_line_naming_field_and_option(option: str, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_inventory(inventory("--log-level=debug", option), base_dir=Path("/inv"))
    message = str(info.value)
    assert "\n" not in message and info.value.code == ExitCode.BAD_INPUT
    if expected.endswith("..."):
        assert message.startswith(expected[:-3]), message
    else:
        assert message == expected


@pytest.mark.parametrize("option", [
    "--healthz-ip=127.0.0.1", "--healthz-ip=127.0.0.53", "--healthz-ip=::1",
    "--docker-opts-file=/run/flannel/docker2", "--etcd-password-file=/etc/overlay/pw",
    "--etcd-username=agent",
])  # fmt: skip
def test_safe_options_pass(option: str) -> None:
    inv, _ = parse_inventory(inventory(option), base_dir=Path("/inv"))
    assert inv.cluster.agent_options == (option,)


def test_the_cli_refuses_before_writing_anything(tmp_path: Path) -> None:
    """`render` with such an inventory: exit 2, one line on stderr, no output folder."""
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(inventory("--etcd-password=hunter2")))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "overlayctl", "render", "-i", str(tmp_path / "cluster.yaml"),
         "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.startswith("overlayctl: error: ")
    assert "cluster.agent_options[0]: --etcd-password would put" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "hunter2" not in done.stderr
    assert done.stdout == "" and not out.exists()
