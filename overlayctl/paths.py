"""Where overlayctl finds its own data files, installed or run from a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """The Jinja2 templates folder.

    An installed wheel carries it as overlayctl/templates (see [tool.setuptools.package-dir]);
    a checkout or an editable install keeps it at the top of the repository.
    """
    for candidate in (_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("overlayctl's templates folder is missing from this installation")
