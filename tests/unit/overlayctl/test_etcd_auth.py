"""etcd's users and role, planned from the inventory (pure parts), and the users' sync against a
fake etcd that keeps what it was told (each change made once; a re-run makes none)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overlayctl import paths as hp
from overlayctl.etcd.auth import (
    READ,
    READWRITE,
    Permission,
    UserStep,
    allowlist,
    allowlist_key,
    host_permissions,
    parse_role,
    prefix_end,
    role_changes,
)
from overlayctl.inventory import load_inventory, parse_inventory
from overlayctl.phases.etcd_auth import sync_users
from overlayctl.phases.pki import ensure_pki
from overlayctl.pki import Identities
from overlayctl.plan.changes import DesiredFile, FileChange
from overlayctl.plan.facts import RemoteFile


def _inv(prefix: str = "/coreos.com/network") -> Any:
    data = {
        "cluster": {"name": "demo", "network": "172.21.0.0/16", "os": "debian",
                    "etcd_prefix": prefix},
        "ssh": {"user": "root", "key": "id_test"},
        "hosts": [{"name": "node2", "address": "192.168.255.9"},
                  {"name": "node1", "address": "192.168.255.10"},
                  {"name": "node3", "address": "192.168.255.8"}],
    }  # fmt: skip
    return parse_inventory(data, Path("/inv"))[0]


def test_the_host_role_is_config_and_allowlist_read_and_subnets_readwrite_only() -> None:
    perms = host_permissions(_inv())
    assert [str(p) for p in perms] == [
        "read /coreos.com/network/allowed-public-ips",
        "read /coreos.com/network/config",
        "readwrite /coreos.com/network/subnets/*",
    ]
    assert not any(p.kind == READWRITE and not p.prefix for p in perms)  # no single-key write
    assert allowlist_key(_inv()) == "/coreos.com/network/allowed-public-ips"


def test_the_allowlist_is_every_host_address_sorted_as_addresses() -> None:
    assert allowlist(_inv()) == {"PublicIPs": ["192.168.255.8", "192.168.255.9", "192.168.255.10"]}


def _perm(key: str, end: str = "", kind: int | None = None) -> dict[str, Any]:
    out = {"key": base64.b64encode(key.encode()).decode()}
    if end:
        out["range_end"] = base64.b64encode(end.encode()).decode()
    if kind is not None:
        out["permType"] = kind
    return out


def test_role_get_output_parses_as_etcd_3_4_prints_it() -> None:
    """etcdctl 3.4 leaves out permType 0 (READ) and range_end for a single key."""
    text = json.dumps({"header": {}, "perm": [_perm("/p/config"),
                      _perm("/p/subnets/", "/p/subnets0", 2), _perm("/a", "/c", 1)]})  # fmt: skip
    got = parse_role(text)
    assert got == sorted([Permission("/p/config", "", READ),
                          Permission("/p/subnets/", prefix_end("/p/subnets/"), READWRITE),
                          Permission("/a", "/c", "write")])  # fmt: skip
    assert [p.keys() for p in got] == [
        ([], ["/a", "/c"]), ([], ["/p/config"]), (["--prefix=true"], ["/p/subnets/"]),
    ]  # fmt: skip
    assert parse_role('{"header": {}}') == []


def test_role_changes_grant_the_missing_and_revoke_the_extra() -> None:
    want = host_permissions(_inv("/p"))
    extra = Permission("/p/config", "", READWRITE)  # someone gave hosts the config's write
    have = [want[0], want[2], extra]
    grant, revoke = role_changes(have, want)
    assert grant == [want[1]] and revoke == [extra]
    assert role_changes(want, want) == ([], [])


class FakeEtcd:
    """EtcdAuth's user calls, kept in memory; CALLS lists the changes made."""

    def __init__(self, users: dict[str, list[str]] | None = None) -> None:
        self.users_ = users or {}
        self.passwords: dict[str, str] = {}
        self.calls: list[str] = []

    def users(self) -> list[str]:
        return sorted(self.users_)

    def roles(self, users: list[str]) -> dict[str, list[str]]:
        return {u: list(self.users_[u]) for u in users}

    def add_user(self, user: str, password: str) -> None:
        self.users_[user], self.passwords[user] = [], password
        self.calls.append(f"add {user}")

    def set_password(self, user: str, password: str) -> None:
        self.passwords[user] = password
        self.calls.append(f"passwd {user}")

    def grant_role(self, user: str, role: str) -> None:
        self.users_[user].append(role)
        self.calls.append(f"grant {user} {role}")

    def apply_users(self, steps: list[UserStep]) -> None:
        """As EtcdAuth's (one round trip for all): each step's calls, in order."""
        for step in steps:
            if step.op == "add":
                self.add_user(step.user, step.password or "")
            elif step.op == "passwd":
                self.set_password(step.user, step.password or "")
            if step.role:
                self.grant_role(step.user, step.role)

    def delete_user(self, user: str) -> bool:
        self.calls.append(f"delete {user}")
        return self.users_.pop(user, None) is not None


def test_sync_users_makes_each_change_once_and_a_rerun_none(tmp_path: Path) -> None:
    ids = Identities(tmp_path)
    for user in ("node1", "node2", "root"):
        ids.ensure_password(user)
    etcd = FakeEtcd({"old": [hp.ETCD_HOST_ROLE], "ops": ["ops-role"]})
    done = sync_users(etcd, ids, ["node1", "node2"])  # type: ignore[arg-type]
    assert done == ["user root added", "user node1 added", "user node2 added",
                    "user old deleted: no host of the inventory"]  # fmt: skip
    assert etcd.users_ == {"root": ["root"], "node1": [hp.ETCD_HOST_ROLE],
                           "node2": [hp.ETCD_HOST_ROLE], "ops": ["ops-role"]}  # fmt: skip
    assert etcd.passwords["node1"] == ids.password("node1") != etcd.passwords["node2"]
    etcd.calls.clear()
    assert sync_users(etcd, ids, ["node1", "node2"]) == []  # type: ignore[arg-type]
    assert etcd.calls == []


def test_sync_users_sets_a_password_etcd_was_not_given_and_a_missing_role(tmp_path: Path) -> None:
    """A user made by hand (or before this folder's record) gets this folder's password."""
    ids = Identities(tmp_path)
    for user in ("node1", "root"):
        ids.ensure_password(user)
    etcd = FakeEtcd({"root": ["root"], "node1": []})
    done = sync_users(etcd, ids, ["node1"])  # type: ignore[arg-type]
    assert done == ["user root: password set", "user node1: password set",
                    f"user node1: role {hp.ETCD_HOST_ROLE} granted"]  # fmt: skip
    assert sync_users(etcd, ids, ["node1"]) == []  # type: ignore[arg-type]


def test_a_forgotten_host_gets_a_new_password_set_on_the_next_sync(tmp_path: Path) -> None:
    ids = Identities(tmp_path)
    for user in ("node1", "root"):
        ids.ensure_password(user)
    etcd = FakeEtcd()
    sync_users(etcd, ids, ["node1"])  # type: ignore[arg-type]
    before = ids.password("node1")
    assert ids.forget("node1") == ["node1.password"]
    ids.ensure_password("node1")
    etcd.users_.pop("node1")  # revoke deleted it in etcd
    assert sync_users(etcd, ids, ["node1"]) == ["user node1 added"]  # type: ignore[arg-type]
    assert etcd.passwords["node1"] == ids.password("node1") != before


def test_revocations_are_recorded_and_readmitted(tmp_path: Path) -> None:
    ids = Identities(tmp_path)
    ids.revoke("node4")
    assert set(ids.revoked()) == {"node4"}
    ids.readmit("node4")
    assert ids.revoked() == {}
    (tmp_path / "revoked.json").write_text("[1]")
    with pytest.raises(Exception, match="not a JSON object"):
        ids.revoked()


def test_a_password_shows_in_a_plan_as_changed_never_its_content() -> None:
    want = DesiredFile(b"s3cret-value\n", 0o600, "root")
    have = RemoteFile(hp.ETCD_AGENT_PASSWORD, b"old-value\n", 0o600, "root")
    diff = FileChange("pki", hp.ETCD_AGENT_PASSWORD, want, have).diff()
    assert diff == f"# {hp.ETCD_AGENT_PASSWORD}: secret replaced (content not shown)\n"
    assert "s3cret" not in diff and "old-value" not in diff


def _cluster(tmp_path: Path, tls: bool) -> Any:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"cluster: {{name: demo, network: 172.21.0.0/16, tls: {str(tls).lower()}}}\n"
                    "hosts: [{name: node1, address: 192.0.2.1, roles: [etcd, node]}, {name: node4,"
                    " address: 192.0.2.4, roles: [node]}]\n")  # fmt: skip
    return load_inventory(path)[0]


def test_without_tls_plan_and_init_say_least_privilege_needs_it(tmp_path: Path) -> None:
    lines: list[str] = []
    assert ensure_pki(_cluster(tmp_path, False), SimpleNamespace(say=lines.append), {}) is None
    assert len(lines) == 1 and "least privilege need cluster.tls: true" in lines[0], lines


def test_init_readmits_a_revoked_host_still_in_the_inventory_and_says_so(tmp_path: Path) -> None:
    inv = _cluster(tmp_path, True)
    lines: list[str] = []
    pki = ensure_pki(inv, SimpleNamespace(say=lines.append), {})
    assert pki is not None
    first = pki.ids.password("node4")
    pki.ids.forget("node4")  # what `certs revoke node4` leaves
    pki.ids.revoke("node4")
    lines.clear()
    again = ensure_pki(inv, SimpleNamespace(say=lines.append), {"node1": pki.ca_cert()})
    assert again is not None and again.ids.revoked() == {}
    assert any("node4 was revoked on" in x for x in lines), lines
    assert again.ids.password("node4") != first
    assert (again.dir / "node4-client.crt").exists()


class _Answers:
    """A member that answers `etcdctl user list` with (code, stderr)."""

    def __init__(self, code: int, stderr: str) -> None:
        self.answer = (code, stderr)

    def run(self, argv: list[str], **_kw: Any) -> Any:
        assert hp.ETCD_ADMIN_KEY not in " ".join(argv)  # asked as a host, not as root
        code, stderr = self.answer
        return SimpleNamespace(code=code, stdout="", stderr=stderr)


@pytest.mark.parametrize(
    ("code", "stderr", "on"),
    [
        (0, "", False),
        (1, "Error: etcdserver: permission denied\n", True),
        (1, "Error: etcdserver: user name is empty\n", True),
    ],
)
def test_auth_is_judged_on_only_from_etcd_refusing_a_host(code: int, stderr: str, on: bool) -> None:
    from overlayctl.etcd.auth import EtcdAuth

    assert EtcdAuth(_Answers(code, stderr), _inv()).enabled() is on  # type: ignore[arg-type]


def test_an_unreachable_etcd_is_not_taken_for_auth_on() -> None:
    """Taken for "on", init would skip `auth enable` and leave the cluster open."""
    from overlayctl.errors import OverlayctlError
    from overlayctl.etcd.auth import EtcdAuth

    answers = _Answers(1, "Error: context deadline exceeded\n")
    with pytest.raises(OverlayctlError, match="context deadline exceeded"):
        EtcdAuth(answers, _inv()).enabled()  # type: ignore[arg-type]
