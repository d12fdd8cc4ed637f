"""The kernel limits a lab raises for its hosts: computed from the host count, never lowered."""

from __future__ import annotations

from pathlib import Path

from overlayctl.lab import limits

INSTANCES = "fs.inotify.max_user_instances"
WATCHES = "fs.inotify.max_user_watches"


def test_25_hosts_need_more_than_debians_default_128_instances() -> None:
    wanted = limits.needed(25)[INSTANCES]
    assert wanted > 128
    # 9 instances per host were measured after init; the budget keeps at least that per host
    assert wanted - limits.INSTANCES_BASE >= 9 * 25


def test_needs_grow_with_the_host_count() -> None:
    assert limits.needed(3)[INSTANCES] < limits.needed(25)[INSTANCES] < limits.needed(64)[INSTANCES]
    assert limits.needed(3)[WATCHES] < limits.needed(64)[WATCHES]


def test_only_values_below_the_need_are_raised() -> None:
    current = {INSTANCES: 128, WATCHES: 192530}
    todo = limits.raises(25, current)
    assert todo == [limits.Raise(INSTANCES, 128, limits.needed(25)[INSTANCES])]


def test_a_higher_value_an_operator_chose_is_never_lowered() -> None:
    assert limits.raises(25, {INSTANCES: 100_000, WATCHES: 10_000_000}) == []


def test_the_line_names_each_change() -> None:
    line = limits.describe(25, [limits.Raise(INSTANCES, 128, 528)])
    assert "\n" not in line
    assert f"{INSTANCES} 128 -> 528" in line and "25 hosts" in line


def _fake_proc(tmp_path: Path, instances: int, watches: int) -> Path:
    folder = tmp_path / "fs" / "inotify"
    folder.mkdir(parents=True)
    (folder / "max_user_instances").write_text(f"{instances}\n")
    (folder / "max_user_watches").write_text(f"{watches}\n")
    return tmp_path


def test_ensure_writes_only_what_is_raised(tmp_path: Path) -> None:
    root = _fake_proc(tmp_path, 128, 10_000_000)
    line = limits.ensure(25, root)
    assert line is not None and INSTANCES in line and WATCHES not in line
    assert limits.read(root) == {INSTANCES: limits.needed(25)[INSTANCES], WATCHES: 10_000_000}
    assert limits.ensure(25, root) is None  # already enough: nothing written, nothing said
