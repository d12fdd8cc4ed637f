"""The agent's offline wheelhouse: our agent as a wheel plus its locked dependencies, per host
Python and architecture (README "The agent's supply chain").

Hosts need no package index: `init` uploads the wheels for the host's Python and architecture
(from facts) and installs them without any network. Dependency wheels are pinned by sha256 in a
lock shipped inside overlayctl (lock.py), fetched once with `pip download --require-hashes` on a
machine that reaches the index (`overlayctl wheelhouse`, cache.py), and checked against that lock
before every upload; the agent's own wheel is built reproducibly from this installation at every
run (agentwheel.py). A host gets the gRPC stack only when its agent uses --etcd-transport=grpc
(bundles.py), and its install checks every file of every wheel against the wheel's RECORD.

Measured on the lab (2 Debian 12 hosts, CPython 3.11, vxlan; the times of `init`'s log, upload
= its sftp step, install = install-agent.sh, per host, two runs each, same machine):

    before (every wheel to every host):  10.7 MB uploaded, upload 0.35-0.49 s, install 0.43-0.62 s
    after, default (http) transport:      0.11 MB uploaded, upload 0.06 s,      install 0.45-0.55 s
    after, --etcd-transport=grpc:          7.9 MB uploaded, upload 0.15-0.50 s, install 1.1-1.8 s

The install now also checks every RECORD hash and byte-compiles the venv (before, the agent
compiled its modules into the venv at its first start, which its read-only unit no longer allows);
for the http agent that costs what the smaller upload saves, for the gRPC stack about a second.
"""

from __future__ import annotations

from overlayctl.wheelhouse.agentwheel import AGENT_DIST, agent_wheel_bytes, build_agent_wheel
from overlayctl.wheelhouse.bundles import AgentBundle, Bundles, digest
from overlayctl.wheelhouse.cache import deps_dir, download_dependencies, find_dependencies
from overlayctl.wheelhouse.lock import cache_root, extras_for, find_lock, require_lock

__all__ = [
    "AGENT_DIST",
    "AgentBundle",
    "Bundles",
    "agent_wheel_bytes",
    "build_agent_wheel",
    "cache_root",
    "deps_dir",
    "digest",
    "download_dependencies",
    "extras_for",
    "find_dependencies",
    "find_lock",
    "require_lock",
]
