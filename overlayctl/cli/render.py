"""`overlayctl render`: write every file overlayctl would put on each host into a local folder."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.actions.render import render_to_dir
from overlayctl.cli.common import Outcome, inventory_option, load, output_option
from overlayctl.text import plural


@click.command()
@inventory_option
@output_option("table")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write DIR/<host>/<path> into (created if missing).",
)
def render(inventory: Path, out_dir: Path) -> Outcome:
    """Write every file overlayctl would put on each host into a local folder. No network."""
    inv = load(inventory, local_files=False)
    written = render_to_dir(inv, out_dir)
    text = (
        f"render: wrote {plural(len(written), 'file')} for {plural(len(inv.hosts), 'host')} "
        f"under {out_dir}"
    )
    return Outcome(text, {"out": str(out_dir), "files": [str(p) for p in written]})
