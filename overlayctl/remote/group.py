"""Run one function per host in parallel and say which hosts succeeded and which failed."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from overlayctl.errors import OverlayctlError

T = TypeVar("T")
H = TypeVar("H")


@dataclass(frozen=True)
class HostFailure:
    host: str
    phase: str
    error: str


@dataclass
class GroupResult(Generic[T]):
    """Per-host outcome of one phase: values for the hosts that succeeded, failures for the rest."""

    phase: str
    succeeded: dict[str, T] = field(default_factory=dict)
    failed: dict[str, HostFailure] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_on_hosts(
    phase: str,
    hosts: Iterable[H],
    fn: Callable[[H], T],
    name: Callable[[H], str],
    parallel: int = 10,
) -> GroupResult[T]:
    """FN for every host, at most PARALLEL at once. One host's error never stops the others.

    Expected errors (OverlayctlError, OSError) become one-line failures; anything else is a bug
    and keeps its traceback's last line so it can be reported.
    """
    items = list(hosts)
    result: GroupResult[T] = GroupResult(phase)

    def one(host: H) -> None:
        try:
            result.succeeded[name(host)] = fn(host)
        except (OverlayctlError, OSError) as exc:
            result.failed[name(host)] = HostFailure(name(host), phase, str(exc))
        except Exception as exc:  # reported per host, never lost
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result.failed[name(host)] = HostFailure(
                name(host),
                phase,
                f"internal error {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})",
            )

    if items:
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items)))) as pool:
            list(pool.map(one, items))
    return result
