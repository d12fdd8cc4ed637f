"""Which hosts doctor looks at and which pairs it probes, from HOST... and --pair: validated
against the inventory before any host is contacted."""

from __future__ import annotations

from collections.abc import Sequence

from overlayctl.errors import ExitCode, OverlayctlError
from overlayctl.inventory.model import Inventory


def select(
    inv: Inventory, names: Sequence[str], pair: tuple[str, str] | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """The node hosts to look at and the ordered pairs to probe, from HOST... and --pair.

    No names: every node host and every pair. Names: those hosts, and the pairs among them.
    --pair A,B: the two hosts, both directions. Pure; a name that is not a node host is bad input.
    """
    nodes = [h.name for h in inv.hosts if h.is_node]
    wanted = list(dict.fromkeys([*names, *(pair or ())]))
    for name in wanted:
        if name not in nodes:
            known = "an etcd-only host" if any(h.name == name for h in inv.hosts) else "not in"
            raise OverlayctlError(
                f"doctor: host {name!r} is {known} the inventory's node hosts ({', '.join(nodes)})",
                ExitCode.BAD_INPUT,
            )
    if pair is not None and pair[0] == pair[1]:
        raise OverlayctlError(f"doctor: --pair needs two hosts, got {pair[0]!r} twice",
                              ExitCode.BAD_INPUT)  # fmt: skip
    hosts = [n for n in nodes if n in wanted] if wanted else nodes
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    return hosts, pairs
