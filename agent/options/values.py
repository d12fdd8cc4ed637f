"""The value types of overlay-agent's options (agent/options/table.py): each converter takes a value
from the command line, the env, the config file or the default and returns the option's value;
ValueError means a bad value, with the message the user sees.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Any

from agent.etcd.types import parse_endpoint

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
BOOL_STATES = {"1": True, "t": True, "true": True, "yes": True, "y": True, "on": True}
BOOL_STATES.update({"0": False, "f": False, "false": False, "no": False, "n": False})
BOOL_STATES.update({"off": False, "": False})


class UsageError(Exception):
    """A bad command line, env value or config file; the message names the option."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``24h``, ``1h30m``, ``90s``, ``500ms``) or a number."""
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"{text!r} is not a duration (e.g. 24h, 90m, 3600s)")
    return total


# Converters: a value from the command line, the env, the config file or the default to the
# option's value; ValueError is a bad value. Repeatable options get the list of values.


def duration(value: Any) -> float:
    """A Go-style duration in seconds, > 0 (a number from the config file is seconds)."""
    seconds = float(value) if isinstance(value, (int, float)) else parse_duration(str(value))
    if seconds <= 0:
        raise ValueError(f"{value!r} must be above zero")
    return seconds


def ip_address(value: Any, v6: bool = True) -> Any:
    try:
        addr = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if not v6 and addr.version != 4:
        raise ValueError(f"{value!r} is not an IPv4 address")
    return addr


def choice(*choices: str, any_case: bool = False) -> Callable[[Any], str]:
    """One of `choices` (with `any_case`, in any case; returned as listed)."""

    def convert(value: Any) -> str:
        for choice in choices:
            if str(value) == choice or (any_case and str(value).casefold() == choice.casefold()):
                return choice
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, choices))}.")

    return convert


class IntRange:
    """An integer from `low` to `high`; ``str()`` is the range as --help shows it."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def __str__(self) -> str:
        return f"x>={self.low}" if self.high is None else f"{self.low}<=x<={self.high}"

    def __call__(self, value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a valid integer range.") from None
        if number < self.low or (self.high is not None and number > self.high):
            raise ValueError(f"{number} is not in the range {self}.")
        return number


def boolean(value: Any) -> bool:
    state = value if isinstance(value, bool) else BOOL_STATES.get(str(value).strip().lower())
    if state is None:
        known = ", ".join(sorted(BOOL_STATES))
        raise ValueError(f"{value!r} is not a valid boolean. Recognized values: {known}")
    return state


def existing_file(value: Any) -> str:
    """The path of an existing, readable file (not a directory)."""
    path = str(value)
    if not os.path.exists(path):
        raise ValueError(f"File {path!r} does not exist.")
    if os.path.isdir(path):
        raise ValueError(f"File {path!r} is a directory.")
    if not os.access(path, os.R_OK):
        raise ValueError(f"File {path!r} is not readable.")
    return path


def endpoints(value: Any) -> tuple[str, ...]:
    urls = split_commas([value])
    if not urls:
        raise ValueError("no endpoint given")
    for url in urls:
        parse_endpoint(url)
    return urls


def split_commas(values: list[Any]) -> tuple[str, ...]:
    return tuple(part.strip() for item in values for part in str(item).split(",") if part.strip())


def regexes(values: list[Any]) -> tuple[str, ...]:
    items = tuple(map(str, values))
    for item in items:
        try:
            re.compile(item)
        except re.error as exc:
            raise ValueError(f"{item!r} is not a regular expression: {exc}") from exc
    return items
