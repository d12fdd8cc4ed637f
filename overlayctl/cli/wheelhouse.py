"""`overlayctl wheelhouse`: fetch the agent's dependency wheels for a host Python, once."""

from __future__ import annotations

import platform

import click

from overlayctl import wheelhouse as wh
from overlayctl.cli.common import Outcome, output_option, progress
from overlayctl.text import plural


@click.command()
@output_option("table")
@click.option(
    "--python",
    "python_version",
    default="3.11",
    show_default=True,
    help="The hosts' Python (Debian 12: 3.11; RHEL 9: 3.9).",
)
@click.option(
    "--arch",
    default=platform.machine(),
    show_default=True,
    help="The hosts' architecture, as `uname -m` prints it.",
)
def wheelhouse(python_version: str, arch: str) -> Outcome:
    """Download the agent's dependencies for hosts running PYTHON on ARCH (needs the index).

    `init` then installs the agent on such hosts without any network access from them.
    """
    folder = wh.download_dependencies(python_version, arch, progress=progress)
    wheels = sorted(p.name for p in folder.glob("*.whl"))
    text = (
        f"wheelhouse: {plural(len(wheels), 'wheel')} for Python {python_version} on {arch} "
        f"in {folder}"
    )
    doc = {"python": python_version, "arch": arch, "folder": str(folder), "wheels": wheels}
    return Outcome(text, doc)
