"""overlay-agent's options: flanneld's flag names and ``FLANNELD_*`` env (the table and how the
command line, env and config file are read against it: table.py), and their value types
(values.py). The rest of the agent imports only the names below.
"""

from agent.options.table import AgentOptions, normalize_argv, parse
from agent.options.values import UsageError

__all__ = ["AgentOptions", "UsageError", "normalize_argv", "parse"]
