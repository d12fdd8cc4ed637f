"""`join`'s etcd phases: the running cluster must have quorum before anything is changed
(EtcdQuorum), and new members are added one at a time after their files are in place
(AddMembers): `member add` on the live cluster, then the member starts with
ETCD_INITIAL_CLUSTER_STATE=existing and must become healthy, or it is removed again, so a failed
join leaves the cluster as it was. Running members are never restarted by `join`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import cluster, members
from overlayctl.inventory.model import Host, Inventory
from overlayctl.phases.base import Rollout
from overlayctl.phases.etcd import Etcd, anchor, restart_etcd
from overlayctl.remote.ssh import Remote


@dataclass
class EtcdQuorum:
    """A cluster with one member down still takes new hosts (and members) while it has quorum."""

    live: Inventory  # the inventory as the running cluster sees it (without the new members)
    title: str = Etcd.name

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        first = self.live.etcd_members[0].name
        if first not in rollout.session.remotes:
            raise OverlayctlError(f"join: etcd member {first} is not reachable")
        timeout = rollout.options.etcd_timeout
        cluster.wait_healthy(anchor(rollout, self.live), self.live, timeout, quorum_only=True)


@dataclass
class AddMembers:
    """NEW, in order, each into the cluster the ones before it made (LIVE's members first)."""

    live: Inventory
    new: list[Host] = field(default_factory=list)
    title: str = Etcd.name

    def should_run(self, rollout: Rollout) -> bool:
        return True

    def run(self, rollout: Rollout) -> None:
        joining = {m.name for m in self.new}
        for target in rollout.live(lambda h: h.is_etcd and h.name not in joining):
            if target.plan.wants(Etcd.unit, "start", "restart"):
                rollout.say(target.name, self.title, "needs an etcd restart: run `overlayctl init`")
        first = anchor(rollout, self.live)
        running = list(self.live.etcd_members)
        for member in self.new:
            remote = rollout.session.remotes.get(member.name)
            if remote is None:
                raise OverlayctlError(f"join: {member.name} failed before etcd; nothing was added")
            self._add(rollout, first, remote, member, running)
            running.append(member)
            changes = rollout.report.changes
            changes[member.name] = changes.get(member.name, 0) + 1

    def _add(
        self, rollout: Rollout, first: Remote, remote: Remote, member: Host, running: list[Host]
    ) -> None:
        """Add MEMBER to the cluster of RUNNING members, or leave that cluster as it was."""
        inv = rollout.inv
        live = members.with_members(inv, running)
        member_id = members.add(first, live, member)
        rollout.say(member.name, self.title, f"added as member {member_id}; starting")
        grown = members.with_members(inv, [*running, member])
        try:
            restart_etcd(remote, wait=True)
            took = cluster.wait_healthy(first, grown, rollout.options.etcd_timeout,
                                        quorum_only=True, required=(member.name,))  # fmt: skip
        except OverlayctlError as exc:
            members.remove_id(first, live, member_id)
            remote.run(["systemctl", "stop", "etcd"], check=False, waiting_for="etcd to stop")
            remote.run(["rm", "-rf", hp.etcd_data_dir(member.name)], check=False)
            raise OverlayctlError(
                f"join: {member.name} could not join etcd ({exc}); it was removed again and the "
                "cluster is as it was"
            ) from None
        rollout.say(member.name, self.title, f"joined, cluster healthy ({took:.1f} s)")
