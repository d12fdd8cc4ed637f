"""etcd authentication (`cluster.tls` clusters), in init's order: the allow-list key after the
network config, then the users and the role, then (after every agent restarted with its user
and password) `auth enable`. Day 1 and a day-2 upgrade end the same way, and an agent is never
locked out: agents are given their credentials while authentication is still off (they log in
once it is on, agent/etcd/base.py), and authentication goes on only once every host took its
files. Each step compares first, so a re-run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlayctl import paths as hp
from overlayctl.etcd.auth import EtcdAuth, UserStep
from overlayctl.inventory.model import Inventory
from overlayctl.phases.base import Rollout
from overlayctl.phases.etcd import anchor
from overlayctl.pki import Identities
from overlayctl.text import plural

TITLE = "etcd-auth"


def count_in_etcd(rollout: Rollout, via: Inventory | None, changes: int) -> None:
    """Changes made in etcd count for the member it was reached through."""
    name = (via or rollout.inv).etcd_members[0].name
    rollout.report.changes[name] = rollout.report.changes.get(name, 0) + changes


def _members_live(rollout: Rollout, via: Inventory | None) -> bool:
    members = (via or rollout.inv).etcd_members
    return all(m.name in rollout.session.remotes for m in members)


@dataclass
class AllowList:
    """`<prefix>/allowed-public-ips`: the inventory's host addresses (TLS or not)."""

    via: Inventory | None = None  # whose first member to write through (join: the running one)
    title: str = "allowlist"  # fits the progress lines' 9-wide phase column

    def should_run(self, rollout: Rollout) -> bool:
        return _members_live(rollout, self.via)

    def run(self, rollout: Rollout) -> None:
        auth = EtcdAuth(anchor(rollout, self.via), self.via or rollout.inv)
        result = auth.ensure_allowlist(rollout.inv)
        if result != "unchanged":
            count_in_etcd(rollout, self.via, 1)
        rollout.say("cluster", self.title, f"{result}: {rollout.inv.cluster.etcd_prefix}"
                    "/allowed-public-ips")  # fmt: skip


@dataclass
class _AuthStep:
    """A step on etcd's users (TLS clusters, once the PKI is known and every member is live),
    through the first member of VIA (join: the running cluster's)."""

    via: Inventory | None = None
    title: str = TITLE

    def should_run(self, rollout: Rollout) -> bool:
        tls = rollout.inv.cluster.tls and rollout.pki is not None
        return tls and _members_live(rollout, self.via)

    def auth(self, rollout: Rollout) -> EtcdAuth:
        return EtcdAuth(anchor(rollout, self.via), self.via or rollout.inv)


@dataclass
class EtcdUsers(_AuthStep):
    """root, one user per inventory host (role overlay-host), the role itself; users of that
    role that are no inventory host are deleted."""

    def run(self, rollout: Rollout) -> None:
        pki = rollout.pki
        if pki is None:  # should_run said no already
            return
        auth = self.auth(rollout)
        done = auth.ensure_role() + sync_users(auth, pki.ids, [h.name for h in rollout.inv.hosts])
        for line in done:
            rollout.say("cluster", self.title, line)
        count_in_etcd(rollout, self.via, len(done))


def sync_users(auth: EtcdAuth, ids: Identities, hosts: list[str]) -> list[str]:
    """etcd's users as IDS and HOSTS say; what was changed.

    Every user's change goes to etcd at once, in one round trip (EtcdAuth.apply_users): one
    etcdctl call after another took 5.3 s of a 25-host init. What etcd holds is recorded once
    they all succeeded."""
    done = []
    root, role = hp.ETCD_ROOT_USER, hp.ETCD_HOST_ROLE
    existing = auth.users()
    roles = auth.roles(existing)
    wanted = {root: "root"} | dict.fromkeys(hosts, role)
    steps, passwords = [], {}
    for user, its_role in wanted.items():
        passwords[user] = password = ids.password(user)
        op = "keep"
        if user not in roles:
            op = "add"
            done.append(f"user {user} added")
        elif not ids.etcd_has(user):
            op = "passwd"
            done.append(f"user {user}: password set")
        grant = its_role not in roles.get(user, [])
        if grant and user in roles:
            done.append(f"user {user}: role {its_role} granted")
        if op != "keep" or grant:
            steps.append(UserStep(user, op, password if op != "keep" else None,
                                  its_role if grant else None))  # fmt: skip
    auth.apply_users(steps)
    for user, password in passwords.items():
        ids.record_set(user, password)
    for user in sorted(set(roles) - set(wanted)):
        if role in roles[user]:
            auth.delete_user(user)
            ids.record_set(user, None)
            done.append(f"user {user} deleted: no host of the inventory")
    return done


@dataclass
class AuthEnable(_AuthStep):
    """`auth enable`, once every host (and so every agent) took its identity in this run."""

    def run(self, rollout: Rollout) -> None:
        auth = self.auth(rollout)
        if auth.enabled():
            return
        missing = [h.name for h in rollout.inv.hosts if h.name not in rollout.session.remotes]
        if missing:
            rollout.say("cluster", self.title, "authentication stays off: "
                        f"{plural(len(missing), 'host')} ({', '.join(missing)}) did not take its "
                        "identity in this run; re-run init once they are back")  # fmt: skip
            return
        auth.enable()
        count_in_etcd(rollout, self.via, 1)
        rollout.say("cluster", self.title, "authentication enabled")
