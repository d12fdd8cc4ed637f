"""The programs overlayctl runs on hosts, as files: shell scripts (`NAME.sh`, run by `sh -c`) and
Python programs (`NAME.py`, run by the host's `python3 -c`; standard library only, Python 3.9,
importable here without running: each starts under `if __name__ == "__main__"`).

Every value reaches a script as an argument ($1.., sys.argv), never pasted into its text: Remote
quotes the argument list, so a host name or path can never become code. A module that runs a
script names it once, e.g. ``FACTS = HostScript("facts.sh")``, and runs it with
``remote.script(FACTS, *args)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class HostScript:
    """One program in this folder. LABEL names it in logs and errors (`sh -c <LABEL> ARGS`);
    by default the file's name without its suffix."""

    file: str
    label: str = ""

    def __post_init__(self) -> None:
        if not (FOLDER / self.file).is_file():
            raise FileNotFoundError(f"host script {self.file} is missing from {FOLDER}")
        if not self.label:
            object.__setattr__(self, "label", self.file.rsplit(".", 1)[0])

    @property
    def path(self) -> Path:
        return FOLDER / self.file

    @cached_property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def interpreter(self) -> str:
        return "python3" if self.file.endswith(".py") else "sh"

    def argv(self, *args: str) -> list[str]:
        """The command that runs it with ARGS ($1.. or sys.argv[1:])."""
        if self.interpreter == "python3":
            return ["python3", "-c", self.text, *args]
        return ["sh", "-c", self.text, "sh", *args]
