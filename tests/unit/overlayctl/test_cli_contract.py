"""The CLI's promises that need no host: one JSON document under `-o json` whatever happens,
help text on every option, the reset prompt's refusal, the command named as typed, and counts
in words. The same contract against real SSH hosts:
tests/integration/overlayctl/test_cli_output.py."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from overlayctl.actions.verify import PairResult, VerifyReport
from overlayctl.cli import main
from overlayctl.cli.common import command_as_typed
from overlayctl.output import plan_text, verify_text
from overlayctl.plan.changes import HostPlan


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command's path, walked from the Click tree (what --help lists)."""
    found = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            found += commands(cmd, (*path, name))
        else:
            found.append((*path, name))
    return found


def leaf(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


def with_output(path: tuple[str, ...]) -> bool:
    return any("--output" in p.opts for p in leaf(path).params if isinstance(p, click.Option))


# The commands that hand the terminal to something else: their stdout is that program's.
PASSTHROUGH = {("lab", "shell"), ("lab", "exec"), ("completion",)}


def test_every_other_command_offers_o_json() -> None:
    missing = [p for p in commands() if p not in PASSTHROUGH and not with_output(p)]
    assert missing == []


def test_every_option_has_help_text() -> None:
    bare = [
        f"{' '.join(path)} {param.opts[0]}"
        for path in commands()
        for param in leaf(path).params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert bare == []


def run(*args: str, **kw) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), prog_name="overlayctl", **kw)
    return result.exit_code, result.stdout, result.stderr


INVENTORY_COMMANDS = [p for p in commands() if p not in PASSTHROUGH and
                      any("--inventory" in q.opts for q in leaf(p).params)]  # fmt: skip


@pytest.mark.parametrize("path", INVENTORY_COMMANDS, ids=" ".join)
def test_json_error_document_on_a_missing_inventory(path: tuple[str, ...], tmp_path: Path) -> None:
    extra = {("render",): ["--out", str(tmp_path / "r")], ("join",): ["node9"],
             ("certs", "revoke"): ["node9"],
             ("etcd", "snapshot", "restore"): [str(tmp_path / "inv.yaml")]}  # fmt: skip
    (tmp_path / "inv.yaml").write_text("not: an inventory\n")
    code, out, err = run(*path, "-i", str(tmp_path / "absent.yaml"), "-o", "json",
                         *extra.get(path, []))  # fmt: skip
    doc = json.loads(out)  # exactly one document: json.loads refuses trailing text
    assert doc["ok"] is False
    assert doc["errors"][0]["message"].endswith("inventory file not found (use -i or "
                                                "OVERLAYCTL_INVENTORY)")  # fmt: skip
    assert set(doc["errors"][0]) == {"host", "phase", "message"}
    assert code == 2
    assert err.startswith("overlayctl: error: ")


@pytest.mark.parametrize("spelling", [["-o", "json"], ["--output", "json"], ["--output=json"],
                                      ["-ojson"]])  # fmt: skip
def test_json_document_even_for_a_usage_error(spelling: list[str]) -> None:
    code, out, err = run("status", *spelling, "--parallel", "0")
    doc = json.loads(out)
    assert doc["ok"] is False and "--parallel" in doc["errors"][0]["message"]
    assert code == 2 and "--parallel" in err


def test_o_with_a_file_name_says_that_files_take_out() -> None:
    code, _, err = run("inventory", "from-vagrant", "-o", "cluster.yaml")
    assert code == 2
    assert "a file is named with --out" in err


def test_from_vagrant_refuses_stdout_inventory_with_json() -> None:
    code, out, err = run("inventory", "from-vagrant", "--out", "-", "-o", "json")
    assert code == 2 and json.loads(out)["ok"] is False
    assert "--out -" in err


def test_declining_the_reset_prompt_changes_nothing(tmp_path: Path, seed_inventory: Path) -> None:
    code, out, err = run("reset", "-i", str(seed_inventory), input="n\n")
    assert code == 1
    assert err.strip().splitlines()[-1] == "overlayctl: aborted, nothing changed"
    assert "Aborted!" not in out + err
    assert out == ""  # the question goes to stderr: stdout may be a JSON document
    assert not (seed_inventory.parent / "overlayctl-state").exists()


def test_declining_with_json_still_prints_the_document(seed_inventory: Path) -> None:
    code, out, _ = run("reset", "-i", str(seed_inventory), "-o", "json", input="n\n")
    assert code == 1
    assert json.loads(out)["errors"][0]["message"] == "aborted, nothing changed"


def test_the_lock_and_the_log_name_the_command_as_typed() -> None:
    seen = []

    @click.group()
    def certs() -> None: ...

    @certs.command()
    def rotate() -> None:
        seen.append(command_as_typed())

    root = click.Group("overlayctl", commands={"certs": certs})
    assert CliRunner().invoke(root, ["certs", "rotate"], prog_name="whatever").exit_code == 0
    assert seen == ["overlayctl certs rotate"]


def test_verify_summary_counts_the_hosts_it_could_not_test() -> None:
    pairs = [PairResult(a, b, True, 0.1, True) for a in ("n1", "n2") for b in ("n1", "n2")]
    report = VerifyReport(hosts=["n1", "n2", "n3"], pairs=pairs,
                          hosts_failed={"n3": "connect: SSH port 22 unreachable"})  # fmt: skip
    last = verify_text(report).splitlines()[-1]
    assert last.startswith("verify: 4/9 pairs ok, 5 not tested")
    assert last.endswith("-- FAILED")
    assert not report.ok


def test_counts_are_pluralised() -> None:
    one = VerifyReport(hosts=["n1"], pairs=[PairResult("n1", "n1", True, 0.1, True)])
    assert verify_text(one).splitlines()[-1].startswith("verify: 1/1 pair ok (")
    plan = HostPlan("n1")
    assert plan_text({"n1": plan}) == "=== n1: 0 changes"


@pytest.fixture
def seed_inventory(tmp_path: Path) -> Path:
    key = tmp_path / "id"
    key.write_text("x")
    key.chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "cluster: {name: t, network: 172.21.0.0/16}\n"
        f"ssh: {{key: {key}, known_hosts: {tmp_path / 'known_hosts'}}}\n"
        "hosts:\n  - {name: node1, address: 192.0.2.1}\n"
    )
    return path


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_come_from_click(shell: str) -> None:
    code, out, _ = run("completion", shell)
    assert code == 0 and "_OVERLAYCTL_COMPLETE" in out


def test_bash_completes_commands_and_options() -> None:
    """The script as bash runs it: COMPREPLY after `overlayctl cer<TAB>` and `status --out<TAB>`."""
    import shutil
    import subprocess
    import sys

    binary = Path(sys.executable).parent / "overlayctl"
    if shutil.which("bash") is None or not binary.exists():
        pytest.skip("needs bash and an installed overlayctl script")
    script = run("completion", "bash")[1]
    probe = (
        f"{script}\n"
        "COMP_WORDS=(overlayctl cer); COMP_CWORD=1; _overlayctl_completion overlayctl; "
        'echo "${COMPREPLY[@]}"\n'
        "COMPREPLY=(); COMP_WORDS=(overlayctl status --out); COMP_CWORD=2; "
        "_overlayctl_completion overlayctl; "
        'echo "${COMPREPLY[@]}"\n'
    )
    env = {"PATH": f"{binary.parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env,
                          timeout=60, check=True)  # fmt: skip
    first, second = done.stdout.splitlines()
    assert first.split() == ["certs"]
    assert second.split() == ["--output"]


README = Path(__file__).resolve().parents[3] / "README.md"


def documented_paths(snippet: str) -> list[tuple[str, ...]]:
    """`overlayctl lab up|down --name N` -> [("lab", "up"), ("lab", "down")]: the command paths
    a README snippet names (alternatives spelled `a|b`), stopping at the first non-command."""
    paths: list[tuple[str, ...]] = [()]
    for word in snippet.split():
        grown = [(*p, alt) for p in paths for alt in word.split("|")]
        if not all(g in KNOWN for g in grown):
            break
        paths = grown
    return [p for p in paths if p]


KNOWN = {path[:n] for path in commands() for n in range(1, len(path) + 1)}


def test_readme_command_reference_matches_the_cli() -> None:
    """The README's Commands section names every command, and each of its bullets starts with a
    real one."""
    import re

    section = README.read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    for bullet in re.findall(r"^- `overlayctl ([^`]+)`", section, flags=re.M):
        assert documented_paths(bullet), f"README documents `overlayctl {bullet}`: no such command"
    named = {p for snippet in re.findall(r"`overlayctl ([^`]+)`", section)
             for p in documented_paths(snippet)}  # fmt: skip
    assert sorted(set(commands()) - named) == []


def test_render_json_lists_every_file_it_wrote(tmp_path: Path, seed_inventory: Path) -> None:
    seed_inventory.write_text(seed_inventory.read_text().replace("}\nssh", ", os: debian}\nssh"))
    code, out, err = run("render", "-i", str(seed_inventory), "--out", str(tmp_path / "r"),
                         "-o", "json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["errors"] == [], err
    written = sorted(str(p) for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert sorted(doc["files"]) == written and written
