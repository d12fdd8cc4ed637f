"""`overlayctl completion SHELL`: the shell's completion script, from Click's own mechanism.

The same script comes from `_OVERLAYCTL_COMPLETE=bash_source overlayctl`; the command only
spares the operator that spelling (as kubectl/k0sctl do).
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from overlayctl.errors import EnvironmentProblem

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(overlayctl completion bash)"     (in ~/.bashrc)
    zsh:  eval "$(overlayctl completion zsh)"      (in ~/.zshrc)
    fish: overlayctl completion fish > ~/.config/fish/completions/overlayctl.fish
    """
    root = ctx.find_root()
    cls = get_completion_class(shell)
    if cls is None:  # every name in SHELLS is one of Click's; an older Click may lack one
        raise EnvironmentProblem(f"this Click has no completion for {shell}")
    script = cls(root.command, {}, "overlayctl", "_OVERLAYCTL_COMPLETE").source()
    click.echo(script)
