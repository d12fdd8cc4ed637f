"""A wheelhouse cache counts only when every wheel it lists is there: one whose wheels went
missing would install the agent on hosts without its dependencies, and never be refetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlayctl import wheelhouse
from overlayctl.errors import EnvironmentProblem


def test_a_cache_missing_a_listed_wheel_is_not_complete(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OVERLAYCTL_WHEELHOUSE", str(tmp_path))
    folder = wheelhouse.deps_dir("3.11", "x86_64")
    folder.mkdir(parents=True)
    (folder / "complete").write_text("a-1-py3-none-any.whl\nb-1-py3-none-any.whl\n")
    (folder / "a-1-py3-none-any.whl").write_bytes(b"a")
    with pytest.raises(EnvironmentProblem, match=r"overlayctl wheelhouse --python 3\.11"):
        wheelhouse.find_dependencies("3.11", "x86_64")
    (folder / "b-1-py3-none-any.whl").write_bytes(b"b")
    assert wheelhouse.find_dependencies("3.11", "x86_64") == folder
    (folder / "complete").write_text("")
    with pytest.raises(EnvironmentProblem):
        wheelhouse.find_dependencies("3.11", "x86_64")  # an empty list is no cache either
