"""Rendering: the seed runbook's files, goldens, determinism, modes, and typos that cannot happen.

Set OVERLAYCTL_UPDATE_GOLDENS=1 to rewrite tests/golden/debian-tls and rhel-tls from the renderer:
the test then fails naming every file it rewrote or removed, so an update is never a silent pass
(review `git diff tests/golden`, then run again without the variable). The seed goldens are never
rewritten: they were copied by hand from the runbook.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import stat
import uuid
from pathlib import Path
from typing import Any

import jinja2
import pytest
from click.testing import CliRunner

from overlayctl import paths as hp
from overlayctl.actions.render import render_to_dir
from overlayctl.cli import main
from overlayctl.errors import BadInput
from overlayctl.inventory import Inventory, load_inventory, parse_inventory
from overlayctl.inventory.endpoints import etcd_client_urls
from overlayctl.inventory.network import network_config, network_config_json
from overlayctl.plan.render import RenderedFile, _template, agent_options, render_hosts

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
SEED = GOLDEN / "seed"
DEBIAN = GOLDEN / "debian-tls"
RHEL = GOLDEN / "rhel-tls"
NOT_RENDERED = {"cluster.yaml", "README.md"}
HEADER = b"# Managed by overlayctl for cluster "


def tree(root: Path) -> dict[str, bytes]:
    """Every golden file under root as 'host/remote/path' -> bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in NOT_RENDERED
    }


def rendered_tree(inv: Inventory, out: Path) -> dict[str, bytes]:
    render_to_dir(inv, out)
    return tree(out)


def env_values(content: bytes) -> dict[str, str]:
    """KEY="value" lines of an env-style file (comments skipped), quotes removed."""
    values = {}
    for line in content.decode().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
    return values


# --- the seed runbook ---------------------------------------------------------------------------

# What overlayctl adds to the runbook's files on purpose (see tests/golden/seed/README.md).
SEED_ADDED_ETCD = {
    "ETCD_INITIAL_CLUSTER_TOKEN": "seed",
    "ETCD_INITIAL_CLUSTER_STATE": "new",
}


def without_additions(path: str, content: bytes) -> bytes:
    lines = content.splitlines(keepends=True)
    if lines and lines[0].startswith(HEADER):
        lines = lines[1:]
    if path.endswith(hp.ETCD_CONF):
        lines = [ln for ln in lines if ln.split(b"=")[0].decode() not in SEED_ADDED_ETCD]
    return b"".join(lines)


@pytest.fixture(scope="module")
def seed() -> Inventory:
    return load_inventory(SEED / "cluster.yaml")[0]


# Our agent's unit: the runbook's flanneld came with its own from the flannel package. The
# firewall: the runbook turned it off; overlayctl opens its ports to the cluster only instead
# (firewalld's policies where it runs, else iptables rules and their unit).
SEED_ADDED_FILES = {
    f"{h}{path}"
    for h in ("node1", "node2")
    for path in (
        hp.AGENT_UNIT,
        hp.firewalld_policy(hp.FIREWALLD_HOST_POLICY),
        hp.firewalld_policy(hp.FIREWALLD_FORWARD_POLICY),
        hp.FIREWALL_RULES,
        hp.FIREWALL_UNIT,
    )
}
XML_HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n'


def test_seed_renders_the_runbook_files(seed: Inventory, tmp_path: Path) -> None:
    got = rendered_tree(seed, tmp_path)
    want = tree(SEED)
    assert set(got) >= SEED_ADDED_FILES
    assert sorted(set(got) - SEED_ADDED_FILES) == sorted(want)
    for path, content in want.items():
        assert without_additions(path, got[path]) == content, path


def test_seed_additions_are_exactly_the_documented_ones(seed: Inventory, tmp_path: Path) -> None:
    got = rendered_tree(seed, tmp_path)
    for path, content in got.items():
        lines = content.splitlines(keepends=True)
        head = b"Managed by overlayctl for cluster seed; local changes are replaced by the next "
        head += b"'overlayctl init'."
        if path.endswith(("/etc/hostname", "/config")):
            assert not content.startswith(b"#"), path
        elif path.endswith(".xml"):
            assert lines[:2] == [XML_HEAD, b"<!-- " + head + b" -->\n"], path
        else:
            assert lines[0] == b"# " + head + b"\n", path
        if path.endswith(hp.ETCD_CONF):
            values = env_values(content)
            assert {k: values[k] for k in SEED_ADDED_ETCD} == SEED_ADDED_ETCD
            # each set right under the runbook's commented default, which is kept
            for key in SEED_ADDED_ETCD:
                at = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}=".encode()))
                assert lines[at - 1].startswith(f"#{key}=".encode())


def test_seed_network_config(seed: Inventory) -> None:
    assert network_config(seed) == {"Network": "172.21.0.0/16", "Backend": {"Type": "udp"}}
    assert network_config_json(seed) == '{"Network":"172.21.0.0/16","Backend":{"Type":"udp"}}'


# --- the debian and RHEL TLS goldens -------------------------------------------------------------


def update_goldens(golden: Path, got: dict[str, bytes]) -> list[str]:
    """Make GOLDEN hold exactly GOT; the paths written or removed (so the failure can name them)."""
    changed = []
    for path, content in got.items():
        target = golden / path
        if not target.is_file() or target.read_bytes() != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            changed.append(path)
    for path in sorted(set(tree(golden)) - set(got)):
        (golden / path).unlink()
        changed.append(f"{path} (removed)")
    return changed


@pytest.mark.parametrize("golden", [DEBIAN, RHEL], ids=lambda p: p.name)
def test_tls_goldens(golden: Path, tmp_path: Path) -> None:
    inv, _ = load_inventory(golden / "cluster.yaml")
    got = rendered_tree(inv, tmp_path)
    if os.environ.get("OVERLAYCTL_UPDATE_GOLDENS") == "1":
        changed = update_goldens(golden, got)
        # Never a pass: a run that rewrites what it compares against proves nothing, and a
        # variable left set in CI would otherwise hide every rendering change.
        pytest.fail(
            f"OVERLAYCTL_UPDATE_GOLDENS=1: {golden.name}: "
            + (f"rewrote {', '.join(changed)}" if changed else "nothing to rewrite")
            + "; review `git diff tests/golden` and run again without the variable",
            pytrace=False,
        )
    want = tree(golden)
    assert sorted(got) == sorted(want)
    for path, content in want.items():
        assert got[path] == content, path


def test_debian_tls_choices(tmp_path: Path) -> None:
    inv, _ = load_inventory(DEBIAN / "cluster.yaml")
    files = render_hosts(inv)
    assert hp.AGENT_ENV["debian"] in files["deb1"]
    assert hp.debian_interfaces("eth0") in files["deb1"]
    assert hp.AGENT_ENV["rhel"] in files["cent4"] and hp.ETCD_CONF not in files["cent4"]
    etcd = env_values(files["deb2"][hp.ETCD_CONF].content)
    # The host's address and loopback, never 0.0.0.0 (containers reach every host address)
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == "https://10.0.0.12:2379,https://127.0.0.1:2379"
    assert etcd["ETCD_LISTEN_PEER_URLS"] == "https://10.0.0.12:2380"  # peers: never loopback
    assert etcd["ETCD_PEER_CERT_ALLOWED_CN"] == hp.ETCD_PEER_CN  # no client cert works on 2380
    assert etcd["ETCD_CLIENT_CERT_AUTH"] == etcd["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert (etcd["ETCD_CERT_FILE"], etcd["ETCD_KEY_FILE"]) == (
        hp.ETCD_SERVER_CERT,
        hp.ETCD_SERVER_KEY,
    )
    assert (etcd["ETCD_PEER_CERT_FILE"], etcd["ETCD_PEER_KEY_FILE"]) == (
        hp.ETCD_PEER_CERT,
        hp.ETCD_PEER_KEY,
    )
    assert etcd["ETCD_TRUSTED_CA_FILE"] == etcd["ETCD_PEER_TRUSTED_CA_FILE"] == hp.CA_CERT
    options = shlex.split(
        env_values(files["deb3"][hp.AGENT_ENV["debian"]].content)["FLANNEL_OPTIONS"]
    )
    assert f"--etcd-keyfile={hp.ETCD_CLIENT_KEY}" in options
    assert "--etcd-username=deb3" in options  # its own user; its password only in its 0600 file
    assert f"--etcd-password-file={hp.ETCD_AGENT_PASSWORD}" in options
    assert not any(o.startswith("--etcd-password=") for o in options)
    assert options[-2:] == ["--iface=10.0.0.13", "--ip-masq"]  # no iface given: its address
    assert network_config(inv) == {
        "Network": "10.244.0.0/16",
        "Backend": {"Type": "vxlan", "VNI": 4096},
    }


# --- properties over many inventories -----------------------------------------------------------


def make_inventory(count: int, tls: bool, legacy: bool, os_family: str = "rhel") -> Inventory:
    hosts = [
        {"name": f"h{i}", "address": f"10.1.0.{10 + i}", "iface": "eth0", "os": os_family}
        for i in range(count)
    ]
    data = {
        "cluster": {
            "name": "c",
            "network": "172.30.0.0/16",
            "tls": tls,
            "legacy_client_port": legacy,
        },
        "hosts": hosts,
    }
    return parse_inventory(data, base_dir=Path("/x"))[0]


CASES = [
    (n, tls, legacy, fam)
    for n in (1, 2, 3, 5)
    for tls in (True, False)
    for legacy in (True, False)
    for fam in ("rhel", "debian")
]


@pytest.mark.parametrize(("count", "tls", "legacy", "os_family"), CASES)
def test_seed_typos_cannot_happen(count: int, tls: bool, legacy: bool, os_family: str) -> None:
    inv = make_inventory(count, tls, legacy, os_family)
    scheme = "https" if tls else "http"
    for host in inv.hosts:
        files = render_hosts(inv)[host.name]
        if host.is_etcd:
            etcd = env_values(files[hp.ETCD_CONF].content)
            own = [
                *etcd["ETCD_ADVERTISE_CLIENT_URLS"].split(","),
                *etcd["ETCD_INITIAL_ADVERTISE_PEER_URLS"].split(","),
            ]
            # advertise URLs name only this host's own address (the runbook's node1 named node2's)
            assert {u.split("//")[1].rsplit(":", 1)[0] for u in own} == {str(host.address)}
            assert all(u.startswith(f"{scheme}://") for u in own)
            assert ("4001" in etcd["ETCD_ADVERTISE_CLIENT_URLS"]) is legacy
            assert etcd["ETCD_NAME"] == host.name
            assert etcd["ETCD_DATA_DIR"] == f"/var/lib/etcd/{host.name}.etcd"
        agent = env_values(files[hp.AGENT_ENV[os_family]].content)
        options = shlex.split(agent["FLANNEL_OPTIONS"])
        # every option is one --name[=value] word (the runbook had `--etcd endpoints=...`)
        assert all(o.startswith("--") and " " not in o for o in options)
        assert f"--etcd-endpoints={agent['FLANNEL_ETCD_ENDPOINTS']}" in options
        assert agent["FLANNEL_ETCD_ENDPOINTS"] == ",".join(etcd_client_urls(inv))


def test_endpoints_are_the_etcd_members_only() -> None:
    data = {
        "cluster": {"name": "c", "network": "172.30.0.0/16", "os": "debian"},
        "hosts": [
            {"name": "a", "address": "10.0.0.1", "roles": ["etcd"]},
            {"name": "b", "address": "10.0.0.2"},
        ],
    }
    inv = parse_inventory(data, base_dir=Path("/x"))[0]
    assert etcd_client_urls(inv) == ["https://10.0.0.1:2379"]
    files = render_hosts(inv)
    assert hp.AGENT_ENV["debian"] not in files["a"] and hp.ETCD_CONF not in files["b"]
    assert agent_options(inv, inv.hosts[1])[-1] == "--iface=10.0.0.2"


def test_render_is_deterministic(tmp_path: Path) -> None:
    first = render_hosts(load_inventory(DEBIAN / "cluster.yaml")[0])
    second = render_hosts(load_inventory(DEBIAN / "cluster.yaml")[0])
    assert first == second
    assert list(first["deb1"]) == sorted(first["deb1"])


def test_modes_and_owners() -> None:
    for files in render_hosts(load_inventory(DEBIAN / "cluster.yaml")[0]).values():
        for path, item in files.items():
            assert isinstance(item, RenderedFile)
            assert path.startswith("/")
            assert (item.mode, item.owner) == (0o644, "root"), path
    keys = [f for f in hp.PKI_FILES if f.path.endswith(".key")]
    assert keys and all(f.mode == 0o600 for f in keys)


def test_ifcfg_uuid_is_derived_when_absent() -> None:
    inv, _ = load_inventory(DEBIAN / "cluster.yaml")
    ifcfg = render_hosts(inv)["cent4"][hp.rhel_ifcfg("eth1")].content
    value = uuid.UUID(env_values(ifcfg)["UUID"])
    assert value.version == 5
    again = render_hosts(load_inventory(DEBIAN / "cluster.yaml")[0])["cent4"]
    assert again[hp.rhel_ifcfg("eth1")].content == ifcfg
    assert env_values(ifcfg)["DEFROUTE"] == "no" and "GATEWAY" not in env_values(ifcfg)


def test_network_config_lists_only_non_defaults() -> None:
    data: dict[str, Any] = {
        "cluster": {
            "name": "c",
            "network": "10.5.0.0/16",
            "subnet_len": 26,
            "subnet_min": "10.5.1.0",
            "backend": "vxlan",
            "backend_options": {"vni": 1, "port": 4789, "direct_routing": True},
        },
        "hosts": [{"name": "a", "address": "192.0.2.1"}],
    }
    inv = parse_inventory(data, base_dir=Path("/x"))[0]
    assert network_config(inv) == {
        "Network": "10.5.0.0/16",
        "SubnetLen": 26,
        "SubnetMin": "10.5.1.0",
        "Backend": {"Type": "vxlan", "Port": 4789, "DirectRouting": True},
    }
    assert ipaddress.IPv4Network(network_config(inv)["Network"])


def test_render_needs_an_os_family() -> None:
    data = {
        "cluster": {"name": "c", "network": "10.5.0.0/16"},
        "hosts": [{"name": "a", "address": "192.0.2.1"}],
    }
    inv = parse_inventory(data, base_dir=Path("/x"))[0]
    with pytest.raises(BadInput, match=r"^hosts\[0\] \(a\)\.os: rendering needs the OS family"):
        render_hosts(inv)


def test_templates_refuse_undefined_values() -> None:
    with pytest.raises(jinja2.UndefinedError):
        _template("debian", "hosts", header="x")


# --- the CLI ------------------------------------------------------------------------------------


def test_render_cli_writes_files_with_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["render", "--out", str(out)],
        env={"OVERLAYCTL_INVENTORY": str(SEED / "cluster.yaml")},
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("overlayctl: warning: hosts: 2 etcd members")
    assert "wrote 25 files for 2 hosts" in result.stdout
    hosts_file = out / "node1" / "etc" / "hosts"
    assert stat.S_IMODE(hosts_file.stat().st_mode) == 0o644
    assert (out / "_etcd" / "atomic.io" / "network" / "config").read_text() == network_config_json(
        load_inventory(SEED / "cluster.yaml")[0]
    )
    # a second run overwrites with the same bytes
    before = tree(out)
    assert (
        CliRunner()
        .invoke(main, ["render", "-i", str(SEED / "cluster.yaml"), "--out", str(out)])
        .exit_code
        == 0
    )
    assert tree(out) == before


def test_render_cli_default_inventory_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OVERLAYCTL_INVENTORY", raising=False)
    result = CliRunner().invoke(main, ["render", "--out", "o"])
    assert result.exit_code == 2
    assert result.stderr == (
        "overlayctl: error: cluster.yaml: inventory file not found "
        "(use -i or OVERLAYCTL_INVENTORY)\n"
    )
