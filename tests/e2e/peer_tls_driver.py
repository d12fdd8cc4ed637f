"""adopt's PeerTls run alone through the engine, before actions/adopt.py wires it
(tests/e2e/test_adopt_peers.py). Run in a lab's workstation namespace by the installed
overlayctl's python (it imports nothing of tests/):

    python peer_tls_driver.py INVENTORY [--r3] [--etcd-timeout=S] [--fail-on=HOST]

The members' certificates are pushed first (adopt's PushPki; init's Gather would refuse the
hand-built etcd.conf's scheme). --r3: then init's Gather and Etcd phases (R3: https clients,
client certificates, v2 off), to see whether they go through after the rounds. --fail-on=HOST:
HOST's peer key is made unreadable for etcd before the rounds (a restart there must fail and be
rolled back). Prints the progress lines, then `failed: {...}`; exit 1 on any failure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.inventory import load_inventory
from overlayctl.phases.adopt_peers import PeerTls
from overlayctl.phases.base import Rollout, RolloutOptions
from overlayctl.phases.connect import Connect
from overlayctl.phases.engine import run_phases
from overlayctl.phases.etcd import Etcd
from overlayctl.phases.facts import Gather
from overlayctl.phases.pki import ensure_pki
from overlayctl.remote.session import Reporter, Session


@dataclass
class MemberPki:
    """Every member's certificates pushed (what adopt's PushPki does before PeerTls)."""

    break_on: str = ""
    title: str = "pki"

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        inv = rollout.inv
        pki = ensure_pki(inv, rollout.session.reporter, {h.name: None for h in inv.hosts})
        assert pki is not None
        for host in inv.etcd_members:
            content = pki.host_files(host.name, member=True)
            files = [(f.path, content[f.path], f.mode, f"{f.owner}:{f.owner}")
                     for f in hp.PKI_FILES if f.path in content]  # fmt: skip
            remote = rollout.session.remotes[host.name]
            remote.put_files(files)
            if host.name == self.break_on:  # etcd (its user) can no longer read its peer key
                remote.run(["chown", "root:root", hp.ETCD_PEER_KEY])
            rollout.say(host.name, self.title, f"{len(files)} files")


def main(path: str, *args: str) -> int:
    inv = load_inventory(Path(path))[0]
    opts = dict(a.lstrip("-").split("=", 1) for a in args if "=" in a)
    options = RolloutOptions(etcd_timeout=float(opts.get("etcd-timeout", 90)))
    session = Session(inv, Reporter(None, echo=print), options, "peer-tls-test", lock=True)
    rollout = Rollout(session, options)
    phases: list = [Connect(), MemberPki(opts.get("fail-on", "")), PeerTls()]
    if "--r3" in args:
        phases += [Gather(refuse_change=False), Etcd()]
    error = None
    try:
        with session:
            run_phases(rollout, phases)
    except OverlayctlError as exc:
        error = exc
        print(f"error: {exc}")
    finally:
        session.reporter.close()
    print(f"phases_s: {rollout.report.phases_s}")
    print("failed: " + repr({f.host: f"{f.phase}: {f.error}" for f in session.failures}))
    return 1 if error or session.failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
