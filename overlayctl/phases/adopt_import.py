"""adopt's two phases on flanneld's v2 data (docs/design/adopt.md 3.2, 3.5), through the first
etcd member:

ImportV2, before any agent starts: the v2 config and every v2 lease into v3, each key created
only if absent, so that no host depends on subnet.env surviving. Done when every imported key is
in v3 with its PublicIP; a re-run writes nothing.

DropV2, after the last flanneld is gone: the v2 dump saved to
overlayctl-state/<cluster>/adopt/v2-dump.json, then the v2 keys deleted (etcd 3.6 refuses to
start with custom v2 data). Only when every inventory host answers that no flanneld runs there,
and only once every v2 lease is in v3; a key changed since the dump is kept and named.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from overlayctl.errors import OverlayctlError
from overlayctl.etcd import v2_remote
from overlayctl.etcd.v2 import parse_dump
from overlayctl.etcd.v2_import import ImportPlan, decide, missing
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.base import Rollout
from overlayctl.phases.etcd import anchor
from overlayctl.phases.etcd_auth import count_in_etcd
from overlayctl.remote.ssh import Remote
from overlayctl.text import plural

DUMP_NAME = "v2-dump.json"
FLANNELD_CHECK = [
    (["systemctl", "is-active", "flanneld"], "flanneld state"),
    (["pgrep", "-x", "flanneld"], "flanneld process"),
]
_ACTIVE = ("active", "activating", "reloading", "deactivating")  # a flanneld still at work


@dataclass
class _V2Phase:
    """Through VIA's first member (adopt: the inventory as etcd's clients see it now, plain
    http); FORCE and DROP_STALE as `adopt --force --drop-stale` say (etcd/v2_import.decide)."""

    force: bool = False
    drop_stale: bool = False
    via: Inventory | None = None

    def should_run(self, rollout: Rollout) -> bool:
        return (self.via or rollout.inv).etcd_members[0].name in rollout.session.remotes

    def read(self, rollout: Rollout) -> tuple[Remote, v2_remote.V2Read]:
        remote = anchor(rollout, self.via)
        return remote, v2_remote.read_v2(remote, self.via or rollout.inv)

    def decide(
        self, rollout: Rollout, text: str, remote: Remote
    ) -> tuple[ImportPlan, list[tuple[str, str, int]]]:
        """The import's plan from the v2 answer TEXT and v3 now (ImportRefused: nothing done)."""
        inv = rollout.inv
        v3 = v2_remote.read_v3(remote, self.via or inv)
        v2 = parse_dump(text, inv.cluster.etcd_prefix)
        plan = decide(v2, inv, v3, force=self.force, drop_stale=self.drop_stale)
        return plan, v3


@dataclass
class ImportV2(_V2Phase):
    """The v2 config and leases into v3 (plan: what this run decided, for the report)."""

    title: str = "import-v2"  # fits the progress lines' 9-wide phase column
    plan: ImportPlan | None = field(default=None, init=False)

    def preview(self, rollout: Rollout) -> ImportPlan | None:
        """What run would write, writing nothing (`plan`); None when the v2 API is off.
        ImportRefused as run would refuse."""
        remote, read = self.read(rollout)
        return None if read.state == "off" else self.decide(rollout, read.text, remote)[0]

    def run(self, rollout: Rollout) -> None:
        reach = self.via or rollout.inv
        remote, read = self.read(rollout)
        if read.state == "off":
            rollout.say("cluster", self.title, f"the v2 API is off on {remote.target.name}: "
                        "nothing to import")  # fmt: skip
            return
        self.plan, v3 = self.decide(rollout, read.text, remote)
        for line in self.plan.lines:
            rollout.say("cluster", self.title, line)
        made = v2_remote.apply(remote, reach, self.plan.writes) if self.plan.writes else 0
        count_in_etcd(rollout, reach, made)
        if made:
            v3 = v2_remote.read_v3(remote, reach)
        lost = missing(self.plan, v3, rollout.inv.cluster.etcd_prefix)
        if lost:
            raise OverlayctlError(f"etcd v3 does not hold the imported {plural(len(lost), 'key')}"
                                  f" {', '.join(lost)}: another writer? re-run adopt")  # fmt: skip
        rollout.say("cluster", self.title, f"{plural(made, 'key')} written; "
                    f"{plural(len(self.plan.want), 'subnet')} from v2 in v3")  # fmt: skip


@dataclass
class DropV2(_V2Phase):
    """The v2 keys saved locally, then deleted (saved: where the dump went in this run). While
    a flanneld may still run (a host's takeover failed or was cut) it stops the run instead:
    init's phases after it would only refuse the cluster as built by hand, naming `adopt`."""

    title: str = "drop-v2"
    saved: Path | None = field(default=None, init=False)

    def run(self, rollout: Rollout) -> None:
        running = flanneld_hosts(rollout)
        if running:  # the run stops: init's phases that follow would refuse a v2 cluster anyway
            raise OverlayctlError(f"v2 keys kept: flanneld may still run on {', '.join(running)} "
                                  "(not taken over): re-run adopt once it is gone")  # fmt: skip
        reach = self.via or rollout.inv
        remote, read = self.read(rollout)
        v2 = parse_dump(read.text, rollout.inv.cluster.etcd_prefix) if read.text else None
        if read.state != "found" or v2 is None or not v2.found:
            why = "the v2 API is off" if read.state == "off" else "no v2 keys under the prefix"
            rollout.say("cluster", self.title, f"{why}: nothing to drop")
            return
        plan, _ = self.decide(rollout, read.text, remote)
        if plan.writes:
            raise OverlayctlError(
                f"v2 keys kept: {plural(len(plan.writes), 'key')} not in v3 yet "
                f"({plan.writes[0].key}): run adopt's import first"
            )
        self.saved = save_dump(state_dir(rollout.inv) / "adopt", read.text)
        rollout.say("cluster", self.title, f"v2 dump saved to {self.saved}")
        dropped = v2_remote.drop(remote, reach, v2)
        if dropped is None:
            rollout.say("cluster", self.title, "the v2 API went off meanwhile: nothing dropped")
            return
        count_in_etcd(rollout, reach, dropped.deleted)
        if dropped.kept:
            key, why = dropped.kept[0]
            raise OverlayctlError(
                f"v2 keys kept: {key}: {why} ({plural(len(dropped.kept), 'key')} in all): "
                "is a flanneld still running? re-run adopt"
            )
        rollout.say("cluster", self.title, f"{plural(dropped.deleted, 'v2 key')} deleted"
                    + (f", {dropped.gone} gone already" if dropped.gone else ""))  # fmt: skip


def flanneld_hosts(rollout: Rollout) -> list[str]:
    """Inventory hosts where a flanneld may still run: active in systemd, a process of that
    name, or the host out of this run (unknown counts as running)."""
    inv = rollout.inv
    unknown = [h.name for h in inv.hosts if h.name not in rollout.session.remotes]

    def runs(_host: Host, remote: Remote) -> bool:
        try:
            unit, proc = remote.batch(FLANNELD_CHECK, timeout=60)
        except (OverlayctlError, OSError):
            return True
        return unit.stdout.strip() in _ACTIVE or proc.code == 0

    asked = [h for h in inv.hosts if h.name in rollout.session.remotes]
    result = rollout.session.each("drop-v2", runs, asked)
    running = [name for name, yes in result.succeeded.items() if yes] + list(result.failed)
    return sorted(set(unknown + running), key=[h.name for h in inv.hosts].index)


def save_dump(folder: Path, text: str) -> Path:
    """TEXT as FOLDER/v2-dump.json, or beside it as v2-dump-N.json when an earlier run saved a
    different one there (a cut run's first dump holds what a later one no longer sees)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DUMP_NAME
    for n in range(2, 1000):
        if not path.exists() or path.read_text() == text:
            break
        path = folder / f"v2-dump-{n}.json"
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)
    return path
