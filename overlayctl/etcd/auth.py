"""etcd's users and role for a `cluster.tls` cluster, and the allow-list key: what they should
be (pure), and bringing etcd there through `etcdctl` on a member, as root (the admin
certificate), changing only what differs.

Users: `root` (the admin: overlayctl itself) and one per inventory host, named as the host, with
the one role `overlay-host`: read `<prefix>/config` and `<prefix>/allowed-public-ips`, read and
write under `<prefix>/subnets/` (the agent's leases), nothing else. Passwords travel on etcdctl's
stdin (`--interactive=false`), never on a command line.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
from dataclasses import dataclass

from agent.etcd.session import prefix_end as agent_prefix_end
from agent.etcd.session import unb64
from agent.subnet.layout import subnets_dir
from overlayctl import paths as hp
from overlayctl.errors import OverlayctlError
from overlayctl.etcd import etcdctl
from overlayctl.etcd.cluster import last_line
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config_key
from overlayctl.remote.scripts import HostScript
from overlayctl.remote.ssh import Remote, RunResult, batch_checked

READ, READWRITE = "read", "readwrite"
ETCD_USERS = HostScript("etcd-users.sh")
# What etcd answers a host's own identity asking for users once auth is on: no permission
# (a user) or no user at all (a certificate without a CN and no token).
_AUTH_REFUSALS = ("permission denied", "user name is empty", "user name not found")


@dataclass(frozen=True, order=True)
class Permission:
    """One permission of a role: KIND on KEY, or on the range KEY..END (END "": KEY alone)."""

    key: str
    end: str
    kind: str

    @property
    def prefix(self) -> bool:
        """The range is every key under KEY."""
        return bool(self.end) and self.end == prefix_end(self.key)

    def keys(self) -> tuple[list[str], list[str]]:
        """(flags, keys) of etcdctl's grant-permission and revoke-permission for it."""
        if self.prefix:
            return ["--prefix=true"], [self.key]
        return [], [self.key, self.end] if self.end else [self.key]

    def __str__(self) -> str:
        if self.prefix:
            return f"{self.kind} {self.key}*"
        return f"{self.kind} [{self.key}, {self.end})" if self.end else f"{self.kind} {self.key}"


def prefix_end(key: str) -> str:
    """etcd's range end for every key under KEY (the agent's own rule, as text)."""
    return unb64(agent_prefix_end(key)).decode()


def allowlist_key(inv: Inventory) -> str:
    """`<prefix>/allowed-public-ips`: the PublicIPs a lease may name (only root writes it)."""
    return f"{inv.cluster.etcd_prefix}/allowed-public-ips"


def allowlist(inv: Inventory) -> dict[str, list[str]]:
    """Pure: the allow-list's value, the inventory's host addresses, sorted."""
    addresses = sorted({ipaddress.ip_address(str(h.address)) for h in inv.hosts})
    return {"PublicIPs": [str(a) for a in addresses]}


def host_permissions(inv: Inventory) -> list[Permission]:
    """Pure: the role `overlay-host`, exactly what an agent reads and writes (agent/subnet:
    the config, the allow-list, its lease under subnets/)."""
    subnets = subnets_dir(inv.cluster.etcd_prefix)
    return sorted([
        Permission(network_config_key(inv), "", READ),
        Permission(allowlist_key(inv), "", READ),
        Permission(subnets, prefix_end(subnets), READWRITE),
    ])  # fmt: skip


def parse_role(text: str) -> list[Permission]:
    """`role get -w json` -> its permissions (etcd omits a READ permType, as 0)."""
    kinds = {0: READ, 1: "write", 2: READWRITE}
    return sorted(
        Permission(
            base64.b64decode(perm.get("key", "")).decode(),
            base64.b64decode(perm.get("range_end", "")).decode(),
            kinds.get(perm.get("permType", 0), "?"),
        )
        for perm in _load(text, "role get").get("perm") or []
    )


def role_changes(
    have: list[Permission], want: list[Permission]
) -> tuple[list[Permission], list[Permission]]:
    """Pure: (to grant, to revoke) so that HAVE becomes WANT."""
    return sorted(set(want) - set(have)), sorted(set(have) - set(want))


@dataclass(frozen=True)
class UserStep:
    """One user's change: OP add (with PASSWORD), passwd (set PASSWORD) or keep; then ROLE
    granted, when given."""

    user: str
    op: str
    password: str | None = None
    role: str | None = None


def _load(text: str, what: str) -> dict:
    """A JSON object from etcdctl (empty output or another JSON type: none)."""
    doc = etcdctl.load_json(text or "{}", what)
    return doc if isinstance(doc, dict) else {}


class EtcdAuth:
    """etcd's users and role through one member (REMOTE), as root."""

    def __init__(self, remote: Remote, inv: Inventory) -> None:
        self.remote = remote
        self.inv = inv

    def _run(self, *args: str, stdin: str | None = None, check: bool = True) -> RunResult:
        out = self.remote.run([*etcdctl.base_argv(self.inv), *args], stdin=stdin, check=False,
                              timeout=60)  # fmt: skip
        if check and out.code != 0:
            raise OverlayctlError(f"etcdctl {' '.join(args[:2])}: {last_line(out.stderr)}")
        return out

    # -- the role ------------------------------------------------------------------------------
    def ensure_role(self) -> list[str]:
        """The role `overlay-host` as host_permissions says; what was changed."""
        role = hp.ETCD_HOST_ROLE
        got = self._run("role", "get", role, "-w", "json", check=False)
        done, changes = [], []  # the changes go in one round trip, in order
        if got.code != 0:
            if "role name not found" not in got.stderr:
                raise OverlayctlError(f"etcdctl role get {role}: {last_line(got.stderr)}")
            changes.append(["role", "add", role])
            done.append(f"role {role} added")
            have: list[Permission] = []
        else:
            have = parse_role(got.stdout)
        grant, revoke = role_changes(have, host_permissions(self.inv))
        for p in revoke:
            flags, keys = p.keys()
            changes.append(["role", "revoke-permission", *flags, role, *keys])
            done.append(f"role {role}: {p} revoked")
        for p in grant:
            flags, keys = p.keys()
            changes.append(["role", "grant-permission", *flags, role, p.kind, *keys])
            done.append(f"role {role}: {p} granted")
        argv = etcdctl.base_argv(self.inv)
        batch_checked(self.remote, [([*argv, *c], f"etcdctl {' '.join(c[:2])} {role}")
                                    for c in changes], stop_at_failure=True)  # fmt: skip
        return done

    # -- users ---------------------------------------------------------------------------------
    def users(self) -> list[str]:
        return list(_load(self._run("user", "list", "-w", "json").stdout, "user list").get("users")
                    or [])  # fmt: skip

    def roles(self, users: list[str]) -> dict[str, list[str]]:
        """Each of USERS -> its roles, read in one round trip, all at once (one after the other:
        1 s of a 25-host re-run's 4; none for no user)."""
        if not users:
            return {}
        argv = etcdctl.base_argv(self.inv)
        commands = [([*argv, "user", "get", u, "-w", "json"], f"etcdctl user get {u}")
                    for u in users]  # fmt: skip
        found = {}
        for user, out in zip(users, self.remote.batch(commands, parallel=True), strict=True):
            if out.code != 0:
                raise OverlayctlError(f"etcdctl user get {user}: {last_line(out.stderr)}")
            found[user] = list(_load(out.stdout, "user get").get("roles") or [])
        return found

    def apply_users(self, steps: list[UserStep]) -> None:
        """Every step at once, in one round trip (remote/scripts/etcd-users.sh); the first
        user whose step failed is raised, naming etcdctl's error."""
        if not steps:
            return
        marker = f"--overlayctl-users-{secrets.token_hex(6)}--"
        lines = "".join(f"{s.user} {s.op} {s.password or '-'} {s.role or '-'}\n" for s in steps)
        got = self.remote.script(ETCD_USERS, marker, *etcdctl.base_argv(self.inv), stdin=lines,
                                 check=False, timeout=120,
                                 waiting_for="etcd's users and roles")  # fmt: skip
        done: dict[str, tuple[str, str]] = {}
        for line in got.stdout.splitlines():
            fields = line.split(" ", 3)
            if len(fields) >= 3 and fields[0] == marker:
                done[fields[1]] = (fields[2], fields[3] if len(fields) > 3 else "")
        for step in steps:
            code, error = done.get(step.user, ("255", last_line(got.stderr) or "did not run"))
            if code != "0":
                raise OverlayctlError(f"etcdctl user {step.op} {step.user}: {error or code}")

    def add_user(self, user: str, password: str) -> None:
        self._run("user", "add", user, "--interactive=false", stdin=password + "\n")

    def set_password(self, user: str, password: str) -> None:
        self._run("user", "passwd", user, "--interactive=false", stdin=password + "\n")

    def grant_role(self, user: str, role: str) -> None:
        self._run("user", "grant-role", user, role)

    def delete_user(self, user: str) -> bool:
        """USER gone from etcd; False when there was none."""
        out = self._run("user", "delete", user, check=False)
        if out.code == 0:
            return True
        if "user name not found" in out.stderr:
            return False
        raise OverlayctlError(f"etcdctl user delete {user}: {last_line(out.stderr)}")

    # -- authentication on or off --------------------------------------------------------------
    def enabled(self) -> bool:
        """Whether etcd checks users: `user list` works for a host's own identity only while
        authentication is off (once on, it is root's alone)."""
        argv = etcdctl.base_argv(self.inv, host_identity=True)
        out = self.remote.run([*argv, "user", "list"], check=False, timeout=60)
        if out.code == 0:
            return False
        if any(word in out.stderr for word in _AUTH_REFUSALS):
            return True
        # Anything else (etcd unreachable, a missing file) says nothing about auth: were it
        # taken for "on", init would skip `auth enable` and leave the cluster open.
        raise OverlayctlError(f"etcdctl user list (is auth on?): {last_line(out.stderr)}")

    def enable(self) -> None:
        self._run("auth", "enable")

    # -- the allow-list --------------------------------------------------------------------------
    def ensure_allowlist(self, inv: Inventory) -> str:
        """`<prefix>/allowed-public-ips` = INV's hosts; "created", "unchanged" or "replaced"."""
        key, want = allowlist_key(self.inv), allowlist(inv)
        current = etcdctl.parse_get(self._run("get", key, "-w", "json").stdout)
        if current is not None:
            try:
                if json.loads(current) == want:
                    return "unchanged"
            except json.JSONDecodeError:
                pass
        self._run("put", key, json.dumps(want, separators=(",", ":")))
        return "created" if current is None else "replaced"
