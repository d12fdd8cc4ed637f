"""The shell text of Remote.batch: several commands in one round trip, each command's stdout
followed by a marker line with its exit code, so that one channel's output splits back into
each command's (remote/ssh.py parses it)."""

from __future__ import annotations

import shlex

BATCH_AT_ONCE = 16  # a parallel batch's commands running together, at most


def batch_text(argvs: list[list[str]], token: str, parallel: bool) -> str:
    """The shell text of a batch: each command's stdout, then TOKEN and its exit code."""
    if not parallel:
        return "\n".join(
            f"{shlex.join(argv)} </dev/null; printf '\\n%s %s\\n' {token} $?" for argv in argvs
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
