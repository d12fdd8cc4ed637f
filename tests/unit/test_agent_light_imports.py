"""agent/light_imports.py: the agent loads pyroute2 without its package __init__, others still can.

Each check runs in a fresh interpreter: this test process may have imported pyroute2 already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_agent_imports_only_the_pyroute2_it_uses() -> None:
    out = run(
        """
        import sys
        import agent.daemon, agent.netlink, agent.backends.hostgw, agent.backends.vxlan
        print(sorted(m for m in ("pyroute2.ndb.main", "pyroute2.ipdb", "yaml")
                     if m in sys.modules))
        """
    )
    assert out == "[]"


def test_names_of_the_full_package_still_import() -> None:
    out = run(
        """
        import agent.netlink
        from pyroute2 import NDB, IPRoute, NetlinkError, config
        import pyroute2
        print(NDB.__name__, IPRoute.__name__, pyroute2.IPRoute is IPRoute, config.__name__)
        """
    )
    assert out == "NDB IPRoute True pyroute2.config"
