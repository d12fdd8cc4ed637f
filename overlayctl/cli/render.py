"""`overlayctl render`: write every file overlayctl would put on each host into a local folder."""

from __future__ import annotations

from pathlib import Path

import click

from overlayctl.cli.common import inventory_option, load
from overlayctl.render_out import render_to_dir


@click.command()
@inventory_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write DIR/<host>/<path> into (created if missing).",
)
def render(inventory: Path, out_dir: Path) -> None:
    """Write every file overlayctl would put on each host into a local folder. No network."""
    inv = load(inventory, local_files=False)
    written = render_to_dir(inv, out_dir)
    click.echo(f"render: wrote {len(written)} files for {len(inv.hosts)} hosts under {out_dir}")
