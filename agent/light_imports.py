"""pyroute2 without its package ``__init__``: every agent pays for the one class it uses.

pyroute2's ``__init__`` imports every module of the library (NDB, IPDB, asyncio, nftables,
wireguard, ethtool, ...): about 6 MB of RSS and 0.1 s of CPU in every agent, for IPRoute and
NetlinkError. :func:`light_pyroute2` registers the package without running that ``__init__``;
submodules (``pyroute2.iproute.linux``, ``pyroute2.netlink.exceptions``) import as usual, and the
first access to a name only the ``__init__`` defines (``from pyroute2 import NDB``) runs it then,
so any other user of pyroute2 in the same process sees no difference.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def light_pyroute2() -> None:
    """Register a lazily initialised ``pyroute2`` package (no-op once pyroute2 is imported)."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def full_init(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # `from pyroute2 import config`
        module.__dict__.pop("__getattr__", None)  # once: the real __init__ from now on
        loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = full_init  # type: ignore[method-assign]
    sys.modules["pyroute2"] = module
