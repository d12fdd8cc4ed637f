"""`overlayctl inventory from-vagrant` against recorded `vagrant ssh-config` and probe output."""

from __future__ import annotations

import importlib
import ipaddress
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from overlayctl import vagrant
from overlayctl.cli import main
from overlayctl.errors import BadInput
from overlayctl.inventory import load_inventory

FIXTURES = Path(__file__).parent / "fixtures" / "vagrant"
VBOX_CONFIG = FIXTURES / "ssh-config-virtualbox.txt"
VBOX_PROBE = FIXTURES / "probe-virtualbox-debian.txt"
LIBVIRT_CONFIG = FIXTURES / "ssh-config-libvirt.txt"
LIBVIRT_PROBE = FIXTURES / "probe-libvirt-rocky.txt"
UNDERLAY = vagrant.DEFAULT_UNDERLAY
# the module (overlayctl.cli exports the Click group under the same name)
inventory_cli = importlib.import_module("overlayctl.cli.inventory")


def probes(path: Path) -> dict[str, vagrant.Probe]:
    return {n: vagrant.parse_probe(t) for n, t in vagrant.split_probes(path.read_text()).items()}


# --- ssh-config ---------------------------------------------------------------------------------


def test_ssh_config_virtualbox() -> None:
    entries = vagrant.parse_ssh_config(VBOX_CONFIG.read_text())
    assert [(e.name, e.hostname, e.port, e.user) for e in entries] == [
        ("node1", "127.0.0.1", 2222, "vagrant"),
        ("node2", "127.0.0.1", 2200, "vagrant"),
        ("node3", "127.0.0.1", 2201, "vagrant"),
    ]
    assert entries[1].identity_files == (
        "/home/op/overlayctl/.vagrant/machines/node2/virtualbox/private_key",
    )


def test_ssh_config_libvirt_quoted_paths_and_chatter() -> None:
    text = "Forwarded ports list for 'node1':\nPort 80 (guest) => Port 8080 (host)\n\n"
    entries = vagrant.parse_ssh_config(text + LIBVIRT_CONFIG.read_text())
    assert [(e.name, e.hostname, e.port) for e in entries] == [
        ("node1", "192.168.121.36", 22),
        ("node2", "192.168.121.171", 22),
    ]
    assert entries[0].identity_files[0].startswith("/home/op/over layctl/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Host' entries"),
        ("Host a\n  Port 0\n", "Port '0' is not a port number"),
        ("Host a\n  Port 22\nHost a\n  Port 23\n", "duplicate Host names"),
    ],
)
def test_ssh_config_errors(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        vagrant.parse_ssh_config(text)


# --- the probe ----------------------------------------------------------------------------------


def test_probe_debian_virtualbox() -> None:
    found = probes(VBOX_PROBE)
    assert list(found) == ["node1", "node2", "node3"]
    node1 = found["node1"]
    assert node1.family == "debian"
    assert [(d, str(a)) for d, a in node1.addresses] == [
        ("lo", "127.0.0.1/8"),
        ("eth0", "10.0.2.15/24"),
        ("eth1", "192.168.255.154/24"),
    ]
    assert [k.split()[0] for k in node1.host_keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert all(len(k.split()) == 2 for k in node1.host_keys)  # the comment is dropped


def test_probe_rocky_libvirt_crlf() -> None:
    node2 = probes(LIBVIRT_PROBE)["node2"]
    assert (node2.os_id, node2.os_like, node2.family) == ("rocky", "rhel centos fedora", "rhel")
    assert ("eth1", ipaddress.IPv4Interface("192.168.255.155/24")) in node2.addresses
    assert node2.host_keys[0].startswith("ssh-ed25519 AAAA")


def test_split_probes_errors() -> None:
    with pytest.raises(BadInput, match="before the first"):
        vagrant.split_probes("2: eth1 inet 1.2.3.4/24\n==> a <==\n")
    with pytest.raises(BadInput, match="appears twice"):
        vagrant.split_probes("==> a <==\n==> a <==\n")


# --- choosing the address -----------------------------------------------------------------------


def test_the_nat_address_is_never_chosen() -> None:
    entries = vagrant.parse_ssh_config(VBOX_CONFIG.read_text())
    machines = vagrant.vms(entries, probes(VBOX_PROBE), UNDERLAY)
    assert [(m.name, str(m.address), m.iface) for m in machines] == [
        ("node1", "192.168.255.154", "eth1"),
        ("node2", "192.168.255.155", "eth1"),
        ("node3", "192.168.255.156", "eth1"),
    ]
    assert machines[0].skipped == ("eth0 10.0.2.15 (NAT)",)
    # even an underlay wide enough to hold the NAT network never yields 10.0.2.15
    wide = ipaddress.IPv4Network("0.0.0.0/0")
    assert {str(m.address) for m in vagrant.vms(entries, probes(VBOX_PROBE), wide)} == {
        "192.168.255.154",
        "192.168.255.155",
        "192.168.255.156",
    }


def test_vagrants_management_address_is_never_chosen() -> None:
    entries = vagrant.parse_ssh_config(LIBVIRT_CONFIG.read_text())
    wide = ipaddress.IPv4Network("192.168.0.0/16")
    machines = vagrant.vms(entries, probes(LIBVIRT_PROBE), wide)
    assert [str(m.address) for m in machines] == ["192.168.255.154", "192.168.255.155"]
    assert "eth0 192.168.121.36 (Vagrant's management address)" in machines[0].skipped


def test_address_errors() -> None:
    entry = vagrant.SshEntry("node1", "127.0.0.1", 2222)
    nat_only = vagrant.parse_probe("2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0")
    with pytest.raises(BadInput, match=r"node1: no IPv4 address inside 192\.168\.255\.0/24"):
        vagrant.choose_address(entry, nat_only, UNDERLAY)
    two = vagrant.parse_probe(
        "3: eth1    inet 192.168.255.154/24 scope global eth1\n"
        "4: eth2    inet 192.168.255.200/24 scope global eth2\n"
    )
    with pytest.raises(BadInput, match="more than one address"):
        vagrant.choose_address(entry, two, UNDERLAY)
    with pytest.raises(BadInput, match="probe: no output for node3"):
        vagrant.vms(
            vagrant.parse_ssh_config(VBOX_CONFIG.read_text()),
            {k: v for k, v in probes(VBOX_PROBE).items() if k != "node3"},
            UNDERLAY,
        )


def test_known_hosts_merge_replaces_only_the_vms_lines() -> None:
    machines = vagrant.vms(
        vagrant.parse_ssh_config(VBOX_CONFIG.read_text()), probes(VBOX_PROBE), UNDERLAY
    )
    old = (
        "# mine\n"
        "192.168.255.154 ssh-ed25519 AAAAold\n"
        "gitlab.example.org,192.0.2.7 ssh-ed25519 AAAAkeep\n"
        "|1|hashed= ssh-ed25519 AAAAhashed\n"
    )
    merged = vagrant.merge_known_hosts(old, machines)
    assert "AAAAold" not in merged
    assert merged.startswith("# mine\ngitlab.example.org,192.0.2.7 ssh-ed25519 AAAAkeep\n|1|")
    assert merged.count("192.168.255.155 ") == 2  # ecdsa + ed25519
    assert vagrant.merge_known_hosts(merged, machines) == merged  # idempotent


# --- the command --------------------------------------------------------------------------------


def run(tmp: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["inventory", "from-vagrant", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_from_vagrant_writes_a_strict_inventory(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("x")
    key.chmod(0o600)
    out = tmp_path / "cluster.yaml"
    code, _, err = run(
        tmp_path, "--ssh-config", str(VBOX_CONFIG), "--probe", str(VBOX_PROBE), "--out", str(out),
        "--key", str(key), "--backend", "udp",
    )  # fmt: skip
    assert code == 0, err
    assert "node1        192.168.255.154 on eth1 (debian); skipped eth0 10.0.2.15 (NAT)" in err
    text = out.read_text()
    assert "10.0.2.15" not in text and "127.0.0.1" not in text and "StrictHostKey" not in text
    inv, warnings = load_inventory(out)
    assert warnings == []
    assert [(h.name, str(h.address), h.iface) for h in inv.hosts] == [
        ("node1", "192.168.255.154", "eth1"),
        ("node2", "192.168.255.155", "eth1"),
        ("node3", "192.168.255.156", "eth1"),
    ]
    assert (inv.cluster.os, inv.cluster.backend, str(inv.cluster.network)) == (
        "debian",
        "udp",
        "172.21.0.0/16",
    )
    assert (inv.ssh.user, inv.ssh.key, inv.ssh.known_hosts) == (
        "root",
        key,
        tmp_path / "known_hosts",
    )
    known = (tmp_path / "known_hosts").read_text().splitlines()
    assert len(known) == 6 and all(line.startswith("192.168.255.15") for line in known)

    # an existing inventory is not replaced without --force; with it, keys are not duplicated
    again = ["--ssh-config", str(VBOX_CONFIG), "--probe", str(VBOX_PROBE), "--out", str(out)]
    code, _, err = run(tmp_path, *again, "--key", str(key))
    assert code == 4 and "exists; pass --force" in err
    assert run(tmp_path, *again, "--key", str(key), "--force")[0] == 0
    assert (tmp_path / "known_hosts").read_text().splitlines() == known


def test_from_vagrant_rhel_to_stdout_without_host_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        tmp_path, "--ssh-config", str(LIBVIRT_CONFIG), "--probe", str(LIBVIRT_PROBE),
        "--out", "-", "--no-host-keys", "--name", "rocky",
        OVERLAYCTL_PUBKEY=str(tmp_path / "k.pub"),
    )  # fmt: skip
    assert code == 0, err
    data = yaml.safe_load(out)
    assert data["cluster"] == {
        "name": "rocky",
        "network": "172.21.0.0/16",
        "backend": "vxlan",
        "os": "rhel",
    }
    assert data["ssh"]["key"] == str(tmp_path / "k")
    assert [h["address"] for h in data["hosts"]] == ["192.168.255.154", "192.168.255.155"]
    assert not (tmp_path / "known_hosts").exists()


def test_from_vagrant_refuses_an_invalid_inventory(tmp_path: Path) -> None:
    code, _, err = run(
        tmp_path, "--ssh-config", str(VBOX_CONFIG), "--probe", str(VBOX_PROBE),
        "--out", str(tmp_path / "c.yaml"), "--network", "192.168.0.0/16",
    )  # fmt: skip
    assert code == 2
    assert err.startswith(
        "overlayctl: error: the inventory would not be valid: hosts[0] (node1).address: "
        "192.168.255.154 is inside the overlay cluster.network 192.168.0.0/16"
    )
    assert not (tmp_path / "c.yaml").exists()


def test_from_vagrant_probes_over_vagrants_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sections = vagrant.split_probes(VBOX_PROBE.read_text())
    calls: list[list[str]] = []

    def fake_run(argv: list[str], stdin: str | None = None) -> str:
        calls.append(argv)
        if argv == ["vagrant", "ssh-config"]:
            return VBOX_CONFIG.read_text()
        assert argv[:2] == ["ssh", "-F"] and Path(argv[2]).read_text() == VBOX_CONFIG.read_text()
        return sections[argv[-2]]

    monkeypatch.setattr(inventory_cli, "_run", fake_run)
    code, _, err = run(tmp_path, "--out", str(tmp_path / "c.yaml"), "--key", "/k")
    assert code == 0, err
    assert [c[-2:] for c in calls[1:]] == [[f"node{i}", vagrant.PROBE_COMMAND] for i in (1, 2, 3)]
    assert load_inventory(tmp_path / "c.yaml")[0].hosts[2].address == ipaddress.IPv4Address(
        "192.168.255.156"
    )


def test_from_vagrant_without_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run(tmp_path, "--out", str(tmp_path / "c.yaml"))
    assert code == 3
    assert "vagrant not found" in err


def test_ci_workflow_runs_the_vm_tier_s_page_for_both_families() -> None:
    """The workflow runs the `vm` tier's own script (tests/vm/vagrant_page.py: up, from-vagrant,
    init twice, verify, status, reload, verify, reset, destroy), never a copy of its steps."""
    workflow = Path(__file__).resolve().parents[3] / ".github" / "workflows" / "vagrant.yml"
    job = yaml.safe_load(workflow.read_text())["jobs"]["cluster"]
    families = {(m["family"], m["box"]) for m in job["strategy"]["matrix"]["include"]}
    assert families == {("debian", "debian/bookworm64"), ("rhel", "generic/rocky9")}
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "python -m tests.vm.vagrant_page --host-libvirt --driver kvm" in runs
    assert '--box "${{ matrix.box }}" --family "${{ matrix.family }}"' in runs
    assert "vagrant up" not in runs and "overlayctl init" not in runs
