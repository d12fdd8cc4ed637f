"""The operator runbooks in docs/runbooks, followed command by command on a lab."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from overlayctl.lab import labs
from tests import installed
from tests.e2e.conftest import make_lab

pytestmark = [pytest.mark.lab, pytest.mark.full, pytest.mark.slow]
RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
# The lab-runnable runbooks, in the order an operator's cluster would live through them, and
# which inventory each one sees ("three" = node1-3; "every" = with node4 added).
ORDER = [
    ("bootstrap.md", "three"),
    ("add-host.md", "every"),
    ("stale-leases.md", "every"),
    ("backup-restore.md", "every"),
    ("rotate-certificates.md", "every"),
    ("mtu.md", "every"),
    ("unreachable-containers.md", "every"),
    ("remove-host.md", "every"),
]


def commands(runbook: Path) -> list[str]:
    """The `$ ` lines of the runbook's console blocks, in order; a `<!-- lab: the inventory
    without node4 ... -->` marker (the operator edits cluster.yaml there) becomes "EDIT"."""
    found = []
    pattern = r"```console\n(.*?)```|<!-- lab: the inventory without node4"
    for match in re.finditer(pattern, runbook.read_text(), flags=re.S):
        if match.group(1) is None:
            found.append("EDIT")
            continue
        found += [line[2:] for line in match.group(1).splitlines() if line.startswith("$ ")]
    return found


def test_every_lab_runbook_is_listed_and_has_commands() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name, _ in ORDER:
        assert f"({name})" in index and commands(RUNBOOKS / name), name
    for path in RUNBOOKS.glob("*.md"):
        assert path.name == "README.md" or f"({path.name})" in index, path.name


def test_runbooks_on_a_lab(tmp_path: Path) -> None:
    lab, three, every = make_lab(4, "vxlan")
    inventories = {"three": three, "every": every}
    bin_dir = str(installed.get().bin)  # the installed wheel's overlayctl, as users have it
    try:
        for name, which in ORDER:
            env = {**installed.clean_env(), "OVERLAYCTL_INVENTORY": str(inventories[which]),
                   "PATH": bin_dir + os.pathsep + os.environ["PATH"]}  # fmt: skip
            for command in commands(RUNBOOKS / name):
                if command == "EDIT":
                    env["OVERLAYCTL_INVENTORY"] = str(three)
                    continue
                result = subprocess.run(
                    ["ip", "netns", "exec", lab.workstation_netns, "sh", "-c", command],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                    check=False,
                )  # fmt: skip
                assert result.returncode == 0, f"{name}: {command}\n{result.stdout}{result.stderr}"
        assert env["OVERLAYCTL_INVENTORY"] == str(three)  # remove-host took node4 out
    finally:
        labs.down(lab.name, progress=lambda _m: None)
