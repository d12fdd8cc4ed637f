"""Can we act as root on a host? Asked once, right after connecting, before any lock or phase.

Without this, a login that is not root (and no working sudo) showed up later as cluster states:
a lock "held by ?", PKI that "would be replaced", etcd "without quorum", busybox "missing".
"""

from __future__ import annotations

from overlayctl.remote.ssh import Command, Remote, RunResult, SshTarget

# `id -u`, as every remote command runs (through `sudo -n` when the inventory says so).
ID_U: Command = (["id", "-u"], "id -u (root check)")


def root_problem(remote: Remote) -> str | None:
    """None when commands run as root there (directly, or through `sudo -n`); else why not."""
    argv, label = ID_U
    return why_not_root(remote.target, remote.run(argv, check=False, timeout=30, log_as=label))


def why_not_root(target: SshTarget, got: RunResult) -> str | None:
    """Pure: what `id -u` (GOT) says about acting as root on TARGET: None, or why not."""
    if got.code == 0 and got.stdout.strip() == "0":
        return None
    who = f"{target.name} ({target.address})"
    if target.sudo:
        said = (got.stderr.strip().splitlines() or [f"exit {got.code}"])[-1]
        if got.code == 127 or "not found" in said:
            why = "sudo is not installed there"
        elif "password" in said:
            why = "sudo asks for a password; overlayctl needs passwordless sudo (`sudo -n`)"
        else:
            why = said
        return f"{who}: cannot act as root through sudo as {target.user}: {why}"
    uid = got.stdout.strip() or "?"
    return (
        f"{who}: logged in as {target.user} (uid {uid}), not root; set ssh.sudo: true "
        "(with passwordless sudo) or ssh.user: root"
    )
