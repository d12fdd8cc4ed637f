"""Inventory loading and validation: every bad inventory names its field (and host) in one line."""

from __future__ import annotations

import copy
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from overlayctl.cli import main
from overlayctl.errors import BadInput, ExitCode
from overlayctl.inventory import (
    check_local_files,
    flannel_defaults,
    load_inventory,
    parse_inventory,
)


def base() -> dict[str, Any]:
    """A valid three-host inventory that each case below breaks in one place."""
    return {
        "cluster": {"name": "demo", "network": "172.21.0.0/16", "backend": "vxlan", "os": "debian"},
        "ssh": {"user": "root", "key": "id_test"},
        "hosts": [
            {
                "name": "node1",
                "address": "192.168.255.154",
                "iface": "ens33",
                "ifcfg": {"prefix": 24, "gateway": "192.168.255.2", "dns": ["119.29.29.29"]},
            },
            {"name": "node2", "address": "192.168.255.155", "iface": "ens33"},
            {"name": "node3", "address": "192.168.255.156"},
        ],
    }


def mutate(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply {"hosts.1.address": value} style changes (None removes the key)."""
    data = copy.deepcopy(data)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        elif value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def parse(data: Any, base_dir: Path = Path("/inv")) -> tuple[Any, list[str]]:
    return parse_inventory(data, base_dir=base_dir)


BAD_FILE = Path(__file__).with_name("bad_inventories.yaml")
BAD: list[dict[str, Any]] = yaml.safe_load(BAD_FILE.read_text())


@pytest.mark.parametrize(
    ("changes", "expected"), [(c["set"], c["error"]) for c in BAD], ids=[c["id"] for c in BAD]
)
def test_bad_inventory_names_field_and_host(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse(mutate(base(), changes))
    message = str(info.value)
    assert "\n" not in message
    assert info.value.code == ExitCode.BAD_INPUT
    if expected.endswith("..."):
        assert message.startswith(expected[:-3]), message
    else:
        assert message == expected


def test_at_least_25_bad_cases() -> None:
    assert len(BAD) >= 25
    assert len({c["id"] for c in BAD}) == len(BAD)


def test_base_is_valid_with_defaults() -> None:
    inv, warnings = parse(base())
    assert warnings == []
    c = inv.cluster
    assert (c.subnet_len, str(c.subnet_min), str(c.subnet_max)) == (
        24,
        "172.21.1.0",
        "172.21.255.0",
    )
    assert (c.etcd_prefix, c.tls, c.legacy_client_port, c.ip_masq) == (
        "/coreos.com/network",
        True,
        False,
        False,
    )
    assert c.docker_mode == "dropin"
    assert (inv.ssh.user, inv.ssh.port, inv.ssh.sudo, inv.ssh.jump) == ("root", 22, False, None)
    assert [h.os for h in inv.hosts] == ["debian"] * 3
    assert inv.hosts[0].ifcfg is not None and inv.hosts[0].ifcfg.uuid is None


def test_default_roles_first_three_hosts_are_etcd() -> None:
    data = base()
    data["hosts"].append({"name": "node4", "address": "192.168.255.157"})
    inv, _ = parse(data)
    assert [h.roles for h in inv.hosts] == [("etcd", "node")] * 3 + [("node",)]


def test_explicit_roles_anywhere_make_the_others_node_only() -> None:
    inv, warnings = parse(mutate(base(), {"hosts.1.roles": ["node", "etcd"]}))
    assert [h.roles for h in inv.hosts] == [("node",), ("etcd", "node"), ("node",)]
    assert warnings == []


def test_even_etcd_members_is_a_warning() -> None:
    inv, warnings = parse(mutate(base(), {"hosts.2.roles": ["node"], "hosts.0.roles": ["etcd"]}))
    assert len(inv.etcd_members) == 1  # only node1 lists etcd; node2 has no roles -> node
    data = base()
    data["hosts"].pop()
    inv, warnings = parse(data)
    assert len(inv.etcd_members) == 2
    assert len(warnings) == 1 and warnings[0].startswith("hosts: 2 etcd members is an even number")


def test_non_root_without_sudo_is_a_warning() -> None:
    _, warnings = parse(mutate(base(), {"ssh.user": "admin"}))
    assert [w.split(":")[0] for w in warnings] == ["ssh.user"]
    _, warnings = parse(mutate(base(), {"ssh.user": "admin", "ssh.sudo": True}))
    assert warnings == []


def test_paths_resolve_against_the_inventory_folder_and_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    inv, _ = parse(mutate(base(), {"ssh.key": "keys/../keys/id"}), base_dir=Path("/srv/cluster"))
    assert inv.ssh.key == Path("/srv/cluster/keys/id")
    assert inv.ssh.known_hosts == Path("/home/op/.ssh/known_hosts")
    inv, _ = parse(mutate(base(), {"ssh.key": "~/.ssh/id", "ssh.known_hosts": "/etc/kh"}))
    assert (inv.ssh.key, inv.ssh.known_hosts) == (Path("/home/op/.ssh/id"), Path("/etc/kh"))


def test_jump_host_forms() -> None:
    jump = parse(mutate(base(), {"ssh.jump": "ops@bastion.example.org:2222"}))[0].ssh.jump
    assert (jump.user, jump.host, jump.port) == ("ops", "bastion.example.org", 2222)
    jump = parse(mutate(base(), {"ssh.jump": "10.0.0.1"}))[0].ssh.jump
    assert (jump.user, jump.host, jump.port) == (None, "10.0.0.1", 22)


def test_flannel_defaults() -> None:
    net = ipaddress.IPv4Network
    assert flannel_defaults(net("10.0.0.0/8")) == (
        24,
        *map(ipaddress.IPv4Address, ("10.0.1.0", "10.255.255.0")),
    )
    assert flannel_defaults(net("10.0.0.0/24"))[0] == 26
    assert flannel_defaults(net("10.0.0.0/22"))[0] == 24


# --- files and YAML ---


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cluster:\n  name: x\n   network: y\n",
            "line 3, column 11: invalid YAML: mapping values are not allowed here",
        ),
        ("cluster: [\n", "line 2, column 1: invalid YAML:"),
        ("- a\n- b\n", "top level: expected a mapping with cluster, ssh and hosts, got a list"),
        ("cluster: {}\ncluster: {}\n", "line 2, column 1: duplicate key 'cluster'"),
        ("", "top level: the inventory is empty"),
        (
            "just a string\n",
            "top level: expected a mapping with cluster, ssh and hosts, got 'just a string'",
        ),
    ],
    ids=["bad-indent", "unclosed", "list", "duplicate-key", "empty", "scalar"],
)
def test_yaml_problems_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BadInput) as info:
        load_inventory(path)
    assert str(info.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(info.value)


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="inventory file not found"):
        load_inventory(tmp_path / "nope.yaml")


def test_load_reads_the_seed_inventory() -> None:
    golden = Path(__file__).resolve().parents[2] / "golden" / "seed" / "cluster.yaml"
    inv, warnings = load_inventory(golden)
    assert [h.name for h in inv.hosts] == ["node1", "node2"]
    assert inv.source == golden
    assert len(warnings) == 1  # two etcd members


def test_check_local_files(tmp_path: Path) -> None:
    data = mutate(base(), {"ssh.key": "id_test", "ssh.known_hosts": "known_hosts"})
    inv, _ = parse(data, base_dir=tmp_path)
    with pytest.raises(BadInput) as info:
        check_local_files(inv)
    assert str(info.value) == f"ssh.key: private key {tmp_path / 'id_test'} does not exist"
    key = tmp_path / "id_test"
    key.write_text("key")
    key.chmod(0o600)
    warnings = check_local_files(inv)
    assert len(warnings) == 1 and warnings[0].startswith("ssh.known_hosts:")
    (tmp_path / "known_hosts").mkdir()
    with pytest.raises(BadInput, match=r"^ssh.known_hosts: .* is not a file$"):
        check_local_files(inv)
    os.rmdir(tmp_path / "known_hosts")
    (tmp_path / "known_hosts").write_text("")
    assert check_local_files(inv) == []


@pytest.mark.parametrize(
    ("mode", "words"),
    [(0o644, "readable by others"), (0o640, "readable by others"), (0o604, "readable by others"),
     (0o620, "open to others")],
)  # fmt: skip
def test_a_key_others_may_read_is_refused(tmp_path: Path, mode: int, words: str) -> None:
    """OpenSSH refuses such a key (group-readable too), so overlayctl does before connecting."""
    inv, _ = parse(mutate(base(), {"ssh.known_hosts": "known_hosts"}), base_dir=tmp_path)
    (tmp_path / "known_hosts").write_text("")
    key = tmp_path / "id_test"
    key.write_text("key")
    key.chmod(mode)
    with pytest.raises(BadInput) as info:
        check_local_files(inv)
    assert str(info.value) == f"ssh.key: {key} is {words} (mode {mode:04o}); run chmod 600 {key}"
    assert info.value.code == ExitCode.BAD_INPUT


def test_cli_plan_refuses_a_readable_key_and_writes_nothing(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("key")
    key.chmod(0o644)
    (tmp_path / "known_hosts").write_text("")
    path = write(tmp_path, yaml.safe_dump(mutate(base(), {"ssh.known_hosts": "known_hosts"})))
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["plan", "-i", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"overlayctl: error: ssh.key: {key} is readable by others (mode 0644); run chmod 600 {key}"
    ]
    assert "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # no overlayctl-state folder, nothing else


# --- through the CLI ---


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hosts.1.address": "192.168.255.300"}, "hosts[1] (node2).address"),
        ({"cluster.backend": "vxlann"}, "cluster.backend"),
        ({"hosts.2.name": "node1"}, "hosts[2] (node1).name"),
    ],
)
def test_cli_bad_inventory_exits_2_with_one_line(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    path = write(tmp_path, yaml.safe_dump(mutate(base(), changes)))
    result = CliRunner().invoke(main, ["render", "-i", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"overlayctl: error: {path}: {field}: ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_malformed_yaml_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster:\n  name: [\n")
    result = CliRunner().invoke(main, ["render", "-i", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert "line 3" in result.stderr and "Traceback" not in result.output
