"""Pure parts of the lab: names, addresses, the mirror lookup, the template cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from overlayctl.cli import main
from overlayctl.errors import BadInput, EnvironmentProblem
from overlayctl.lab import state, system, template


def test_seed_addresses_for_small_labs() -> None:
    ws, hosts, prefix = state.addresses("192.168.255.0/24", 3)
    assert ws == "192.168.255.10"
    assert hosts == ["192.168.255.154", "192.168.255.155", "192.168.255.156"]
    assert prefix == 24


def test_addresses_fall_back_below_154_when_hosts_do_not_fit() -> None:
    _, hosts, _ = state.addresses("10.99.0.0/24", 150)
    assert hosts[0] == "10.99.0.11" and hosts[-1] == "10.99.0.160"


@pytest.mark.parametrize(
    ("subnet", "count", "needle"),
    [("10.0.0.0/29", 6, "too small"), ("10.0.0.1/24", 2, "host bits"), ("nope", 1, "nope")],
)
def test_bad_subnets_are_named(subnet: str, count: int, needle: str) -> None:
    with pytest.raises(BadInput, match=needle):
        state.addresses(subnet, count)


@pytest.mark.parametrize("name", ["", "Demo", "a-b", "1lab", "x" * 13, "a;b", "a\nb"])
def test_bad_lab_names(name: str) -> None:
    with pytest.raises(BadInput, match="lab name"):
        state.check_name(name)


def test_mirror_comes_from_deb822_sources_not_security(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# http://commented.example/debian\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    assert template.debian_mirror(tmp_path) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://one.invalid/debian bookworm main\n"
    )
    assert template.debian_mirror(tmp_path) == "http://one.invalid/debian"


def test_no_mirror_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(EnvironmentProblem, match="no Debian mirror"):
        template.debian_mirror(tmp_path)


def test_template_key_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = template.cache_key()
    monkeypatch.setattr(template, "PACKAGES", (*template.PACKAGES, "tcpdump"))
    assert template.cache_key() != before


def test_lab_commands_need_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(main, ["lab", "up", "--name", "x1"])
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [
        "overlayctl: error: the lab needs root (namespaces, mounts, cgroups)"
    ]


def test_bad_lab_name_exits_2_before_anything_else() -> None:
    result = CliRunner().invoke(main, ["lab", "up", "--name", "Bad;Name"])
    assert result.exit_code == 2
    assert "lab name 'Bad;Name'" in result.output
    assert "Traceback" not in result.output
