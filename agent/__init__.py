"""overlay-agent: a flannel-compatible subnet lease agent and data plane, in Python."""

__version__ = "0.1.0"
