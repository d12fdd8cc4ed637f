"""The inventory file -> the validated model; and where that inventory's local state lives.

Errors are BadInput, one line naming the file, then the field path (see the package's docstring
for the format); warnings are returned, never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from overlayctl.errors import BadInput
from overlayctl.inventory.checks import check_inventory, check_ssh_files
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.parse import parse_top


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                raise BadInput(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r}"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Parsed YAML, or BadInput naming the line (and column) of the problem."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise BadInput(f"{where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"invalid YAML: {' '.join(str(exc).split())}") from None


def load_inventory(path: str | Path) -> tuple[Inventory, list[str]]:
    """Read and validate an inventory file. Returns the model and the warnings (not printed).

    Errors are BadInput, one line, prefixed with the file name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(
            f"{path}: inventory file not found (use -i or OVERLAYCTL_INVENTORY)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the inventory: {exc}") from None
    try:
        data = read_yaml(text)
        return parse_inventory(data, base_dir=path.resolve().parent, source=path)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None


def parse_inventory(
    data: Any, base_dir: Path, source: Path | None = None
) -> tuple[Inventory, list[str]]:
    """Validate already-parsed YAML data. Returns the model and the warnings."""
    inventory = parse_top(data, base_dir, source)
    return inventory, check_inventory(inventory)


def check_local_files(inventory: Inventory) -> list[str]:
    """Check the local files SSH needs (key, known_hosts). BadInput on errors; returns warnings.

    Separate from validation because `render` needs none of them.
    """
    return check_ssh_files(inventory.ssh)


def state_dir(inv: Inventory) -> Path:
    """The cluster's local state (PKI, logs): next to the inventory, or $OVERLAYCTL_STATE_DIR."""
    base = os.environ.get("OVERLAYCTL_STATE_DIR")
    if base:
        return Path(base) / inv.cluster.name
    folder = inv.source.parent if inv.source else Path.cwd()
    return folder / "overlayctl-state" / inv.cluster.name
