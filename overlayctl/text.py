"""Words for people, shared by progress lines (written from any layer) and the output tables."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`1 change`, `2 changes`: counts an operator reads."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
