"""overlay-agent: a flannel-compatible subnet lease agent and data plane, in Python."""

__version__ = "0.1.0"

from agent.light_imports import light_pyroute2  # before any pyroute2 import

light_pyroute2()
