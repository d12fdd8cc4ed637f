"""The shell text of Remote.batch: several commands in one round trip, each command's stdout
followed by a marker line with its exit code, so that one channel's output splits back into
each command's (remote/ssh.py parses it)."""

from __future__ import annotations

import shlex

BATCH_AT_ONCE = 16  # a parallel batch's commands running together, at most


def batch_text(
    argvs: list[list[str]], token: str, parallel: bool, stop_at_failure: bool = False
) -> str:
    """The shell text of a batch: each command's stdout, then TOKEN and its exit code
    (STOP_AT_FAILURE: the shell ends after a command that failed; never with PARALLEL)."""
    if not parallel:
        stop = ' [ "$rc" = 0 ] || exit 0;' if stop_at_failure else ""
        return "\n".join(
            f"{shlex.join(argv)} </dev/null; rc=$?; printf '\\n%s %s\\n' {token} \"$rc\";{stop}"
            for argv in argvs
        )
    runs = []
    for i, argv in enumerate(argvs):
        runs.append(f'{{ {shlex.join(argv)} </dev/null >"$d/{i}"; echo $? >"$d/{i}.rc"; }} &')
        if (i + 1) % BATCH_AT_ONCE == 0:
            runs.append("wait")  # 255 users' reads on one member: not 255 etcdctl at once
    shows = [f"cat \"$d/{i}\"; printf '\\n%s %s\\n' {token} \"$(cat \"$d/{i}.rc\")\""
             for i in range(len(argvs))]  # fmt: skip
    return "\n".join(['d=$(mktemp -d) || exit 1', "trap 'rm -rf \"$d\"' EXIT", *runs, "wait",
                      *shows])  # fmt: skip
