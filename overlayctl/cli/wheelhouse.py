"""`overlayctl wheelhouse`: fetch the agent's dependency wheels for a host Python, once."""

from __future__ import annotations

import platform

import click

from overlayctl import wheelhouse as wh


@click.command()
@click.option(
    "--python",
    "python_version",
    default="3.11",
    show_default=True,
    help="The hosts' Python (Debian 12: 3.11; RHEL 9: 3.9).",
)
@click.option("--arch", default=platform.machine(), show_default=True)
def wheelhouse(python_version: str, arch: str) -> None:
    """Download the agent's dependencies for hosts running PYTHON on ARCH (needs the index).

    `init` then installs the agent on such hosts without any network access from them.
    """
    folder = wh.download_dependencies(python_version, arch, progress=click.echo)
    count = len(list(folder.glob("*.whl")))
    click.echo(f"wheelhouse: {count} wheels for Python {python_version} on {arch} in {folder}")
