"""Write rendered files into a local folder: DIR/<host>/<remote path>, with their modes.

Also DIR/_etcd/<prefix>/config: the exact network config value written to etcd (`_etcd` cannot
clash with a host: host names are RFC 1123 labels, which have no underscore).
"""

from __future__ import annotations

import os
from pathlib import Path

from overlayctl.errors import BadInput
from overlayctl.inventory.model import Inventory
from overlayctl.inventory.network import network_config_json, network_config_key
from overlayctl.plan.render import RenderedFile, render_hosts

ETCD_DIR = "_etcd"


def _write(path: Path, content: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise BadInput(f"--out: cannot write {path}: {exc.strerror or exc}") from None


def write_tree(rendered: dict[str, dict[str, RenderedFile]], out_dir: Path) -> list[Path]:
    """Write every host's files under `out_dir`; returns the written paths in order."""
    written = []
    for host, files in rendered.items():
        for remote, item in files.items():
            target = out_dir / host / remote.lstrip("/")
            _write(target, item.content, item.mode)
            written.append(target)
    return written


def render_to_dir(inv: Inventory, out_dir: Path) -> list[Path]:
    """Render the inventory and write it under `out_dir` (files already there are overwritten)."""
    written = write_tree(render_hosts(inv), out_dir)
    config = out_dir / ETCD_DIR / network_config_key(inv).lstrip("/")
    _write(config, network_config_json(inv).encode("utf-8"), 0o644)
    written.append(config)
    return written
