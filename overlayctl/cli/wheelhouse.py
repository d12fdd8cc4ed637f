"""`overlayctl wheelhouse`: fetch the agent's pinned dependency wheels for a host Python, once;
`overlayctl wheelhouse lock`: the maintainer's command that re-pins them (README "The agent's
supply chain")."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from overlayctl.cli.common import Outcome, json_mode, output_option, progress
from overlayctl.errors import BadInput, Conflict
from overlayctl.text import plural
from overlayctl.wheelhouse import cache, lock


def _target_options(fn):
    fn = click.option(
        "--arch", default=platform.machine(), show_default=True,
        help="The hosts' architecture, as `uname -m` prints it.",
    )(fn)  # fmt: skip
    return click.option(
        "--python", "python_version", default="3.11", show_default=True,
        help="The hosts' Python (Debian 12: 3.11; RHEL 9: 3.9).",
    )(fn)  # fmt: skip


@click.group(invoke_without_command=True)
@output_option("table")
@_target_options
@click.option(
    "--unpinned-python",
    is_flag=True,
    help="For a Python overlayctl ships no lock for: resolve the newest compatible versions "
    "once and pin them in a lock beside the cache, used from then on.",
)
@click.pass_context
def wheelhouse(
    ctx: click.Context, python_version: str, arch: str, unpinned_python: bool
) -> Outcome:
    """Download the agent's pinned dependencies for hosts running PYTHON on ARCH (needs the
    index, once; every wheel is checked against overlayctl's lock).

    `init` then installs the agent on such hosts without any network access from them.
    """
    if ctx.invoked_subcommand is not None:
        if json_mode():
            raise BadInput(f"wheelhouse: give -o after `{ctx.invoked_subcommand}`")
        return Outcome("", {})  # the subcommand prints its own outcome
    if unpinned_python:
        found = lock.find_lock(python_version, arch)
        if found is not None:
            raise Conflict(
                f"wheelhouse: Python {python_version} on {arch} already has a lock "
                f"({found.describe()}); --unpinned-python is only for targets without one"
            )
        wheels = cache.resolve(python_version, arch, pinned_here=False, progress=progress)
        path = lock.local_locks() / lock.lock_name(python_version, arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lock.to_json(python_version, arch, wheels))
        progress(f"wheelhouse: pinned {plural(len(wheels), 'wheel')} in {path}")
    folder = cache.download_dependencies(python_version, arch, progress=progress)
    names = sorted(p.name for p in folder.glob("*.whl"))
    text = (
        f"wheelhouse: {plural(len(names), 'wheel')} for Python {python_version} on {arch} "
        f"in {folder}"
    )
    doc = {"python": python_version, "arch": arch, "folder": str(folder), "wheels": names}
    return Outcome(text, doc)


@wheelhouse.command("lock")
@output_option("table")
@_target_options
@click.option(
    "--to", "to", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the lock here instead of into overlayctl's own locks folder (the checkout's).",
)  # fmt: skip
def lock_command(python_version: str, arch: str, to: Path | None) -> Outcome:
    """Re-pin the agent's dependency wheels for PYTHON on ARCH (maintainers; needs the index).

    Resolves the versions installed with this overlayctl (those its tests ran), writes their
    sha256 into the lock that ships with overlayctl; review and commit the diff.
    """
    wheels = cache.resolve(python_version, arch, pinned_here=True, progress=progress)
    path = to or lock.PACKAGED / lock.lock_name(python_version, arch)
    path.write_text(lock.to_json(python_version, arch, wheels))
    text = (
        f"wheelhouse lock: {plural(len(wheels), 'wheel')} for Python {python_version} on {arch} "
        f"in {path}"
    )
    doc = {"python": python_version, "arch": arch, "lock": str(path),
           "wheels": [w.file for w in wheels]}  # fmt: skip
    return Outcome(text, doc)
