"""Typed reading of one YAML mapping, with every error naming its field path (and host).

`Section` wraps a mapping found at a path such as `cluster` or `hosts[1] (node2).ifcfg`. Each getter
checks presence and type and raises `BadInput` with a single line `<path>.<key>: <problem>`.
Unknown keys are refused up front with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from overlayctl.errors import BadInput

REQUIRED: Final = object()  # marker default: the key must be present

# RFC 1123 label: letters, digits, inner hyphens, 1-63 characters. No dots, spaces, newlines,
# quotes or shell metacharacters can pass. All-digit names are refused too (they read as numbers).
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def describe(value: Any) -> str:
    """A short, safe rendering of a value for an error message (one line, bounded)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 60 else text[:57] + "..."


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' when a close choice exists, else ''."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """'a, b or c' for an error message."""
    items = sorted(choices)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def is_label(value: object) -> bool:
    """True for a valid RFC 1123 label (host or cluster name) that is not all digits."""
    return isinstance(value, str) and bool(_LABEL.fullmatch(value)) and not value.isdigit()


def check_label(value: str, where: str) -> str:
    """`value` if it is a valid RFC 1123 label (host or cluster name), else BadInput."""
    if not is_label(value):
        raise BadInput(
            f"{where}: {describe(value)} is not a valid name (RFC 1123 label: letters, digits and "
            "inner hyphens, at most 63 characters, not all digits)"
        )
    return value


def parse_ipv4(value: str, where: str) -> ipaddress.IPv4Address:
    """An IPv4 address or BadInput naming `where`."""
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise BadInput(f"{where}: {describe(value)} is not an IPv4 address") from None


class Section:
    """A mapping at `where` in the inventory, read key by key."""

    def __init__(self, data: Any, where: str, allowed: Iterable[str], what: str = "") -> None:
        self.where = where  # "" for the top level: its keys are named bare (`hosts`)
        if not isinstance(data, Mapping):
            raise BadInput(
                f"{where or 'top level'}: expected a mapping{what}, got {describe(data)}"
            )
        allowed_set = frozenset(allowed)
        for key in data:
            if not isinstance(key, str):
                raise BadInput(f"{where or 'top level'}: key {describe(key)} is not a string")
            if key not in allowed_set:
                raise BadInput(
                    f"{self.at(key)}: unknown key{suggest(key, allowed_set)}; "
                    f"known keys here: {', '.join(sorted(allowed_set)) or 'none'}"
                )
        self.data: Mapping[str, Any] = data

    def at(self, key: str) -> str:
        """The printable path of `key` inside this section."""
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = REQUIRED) -> Any:
        """The value, `default` when absent or null, BadInput when required and absent."""
        value = self.data.get(key)
        if value is None:
            if default is REQUIRED:
                raise BadInput(f"{self.at(key)}: required")
            return default
        return value

    def string(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.raw(key, default)
        if value is default and not self.has(key):
            return value
        if not isinstance(value, str):
            raise BadInput(f"{self.at(key)}: expected a string, got {describe(value)}")
        if not value.strip():
            raise BadInput(f"{self.at(key)}: must not be empty")
        return value

    def integer(self, key: str, default: Any = REQUIRED, lo: int = 0, hi: int = 2**31) -> Any:
        value = self.raw(key, default)
        if value is default and not self.has(key):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{self.at(key)}: expected an integer, got {describe(value)}")
        if not lo <= value <= hi:
            raise BadInput(f"{self.at(key)}: {value} is out of range {lo}..{hi}")
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise BadInput(f"{self.at(key)}: expected true or false, got {describe(value)}")
        return value

    def choice(self, key: str, choices: Iterable[str], default: Any = REQUIRED) -> Any:
        value = self.string(key, default)
        if value is default and not self.has(key):
            return value
        options = frozenset(choices)
        if value not in options:
            raise BadInput(
                f"{self.at(key)}: {describe(value)} is not one of {one_of(options)}"
                f"{suggest(value, options)}"
            )
        return value

    def strings(self, key: str, default: Any = REQUIRED) -> Any:
        """A list of strings; returns (path-of-item, value) pairs."""
        value = self.raw(key, default)
        if value is default and not self.has(key):
            return value
        if not isinstance(value, list):
            raise BadInput(f"{self.at(key)}: expected a list, got {describe(value)}")
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise BadInput(f"{self.at(key)}[{i}]: expected a string, got {describe(item)}")
            items.append((f"{self.at(key)}[{i}]", item))
        return items

    def path(self, key: str, base_dir: Path, default: Any = REQUIRED) -> Any:
        """A local path: `~` expanded, relative paths taken from the inventory's folder."""
        value = self.string(key, default)
        if value is default and not self.has(key):
            return value
        if "\n" in value or "\0" in value:
            raise BadInput(f"{self.at(key)}: {describe(value)} is not a usable path")
        return local_path(value, base_dir)


def local_path(value: str, base_dir: Path) -> Path:
    """`~` expanded; a relative path is taken from `base_dir` (the inventory file's folder)."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base_dir / path
    return Path(os.path.normpath(path))
