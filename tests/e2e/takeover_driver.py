"""adopt's ImportV2 and TakeOver phases run alone through the engine, before actions/adopt.py
wires them (tests/e2e/test_adopt_takeover.py). Run in a lab's workstation namespace by the
installed overlayctl's python (it imports nothing of tests/):

    python takeover_driver.py INVENTORY [HOST...]

HOSTs: take over only those (the others keep flanneld: the mixed roll). Prints the progress
lines, then `failed: {...}`; exit 1 when a host failed or a phase raised.
"""

from __future__ import annotations

import sys
from pathlib import Path

from overlayctl.errors import OverlayctlError
from overlayctl.inventory import load_inventory
from overlayctl.inventory.model import Host
from overlayctl.phases.adopt_import import ImportV2
from overlayctl.phases.adopt_takeover import TakeOver, interim
from overlayctl.phases.base import Rollout, RolloutOptions
from overlayctl.phases.connect import Connect
from overlayctl.phases.engine import run_phases
from overlayctl.phases.facts import Gather
from overlayctl.remote.session import Reporter, Session


class Only(TakeOver):
    """TakeOver on HOSTS only."""

    def __init__(self, hosts: set[str]) -> None:
        super().__init__()
        self.hosts = hosts

    def runs_on(self, host: Host) -> bool:
        return super().runs_on(host) and (not self.hosts or host.name in self.hosts)


def main(path: str, *hosts: str) -> int:
    inv = load_inventory(Path(path))[0]
    options = RolloutOptions()
    session = Session(inv, Reporter(None, echo=print), options, "takeover-test", lock=True)
    rollout = Rollout(session, options)
    error = None
    try:
        with session:
            run_phases(rollout, [Connect(), Gather(refuse_change=False),
                                 ImportV2(via=interim(inv)), Only(set(hosts))])  # fmt: skip
    except OverlayctlError as exc:
        error = exc
        print(f"error: {exc}")
    finally:
        session.reporter.close()
    print("failed: " + repr({f.host: f"{f.phase}: {f.error}" for f in session.failures}))
    return 1 if error or session.failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
