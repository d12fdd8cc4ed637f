"""Words for people, shared by progress lines (written from any layer) and the output tables."""

from __future__ import annotations

import re


def plural(count: int, noun: str) -> str:
    """`1 change`, `2 changes`: counts an operator reads."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


# What a terminal would act on instead of showing: an ESC sequence (CSI, OSC up to its BEL or
# ST, or ESC and one character), then any other C0 control, DEL, a C1 control, and the
# bidirectional overrides that reorder what is shown.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.?)", re.DOTALL)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\n]")


def printable(text: str, *, lines: bool = True) -> str:
    """TEXT as a terminal may show it: a string that came from etcd or a host (a lease's
    BackendType, a host name, an error) could otherwise move the cursor, retitle the window or
    rewrite what is already on the screen. LINES keeps newlines and tabs (a diff, a message);
    without it (a table cell) they become spaces. JSON output needs none of this: json.dumps
    escapes every control character already."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text))
    return text if lines else _LINE_BREAKS.sub(" ", text)
