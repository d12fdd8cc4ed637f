"""Keeps flannel's iptables rules (agent/net/iptables.py) in place while the agent runs.

FLANNEL-FWD unless ``--iptables-forward-rules=false``; FLANNEL-POSTRTG with ``--ip-masq``.
Programmed with the data plane, re-checked every ``--iptables-resync`` seconds (flanneld does
the same: a docker or firewalld restart flushes them), rebuilt when our subnet changes, and
removed on exit only with ``--cleanup-on-exit``. A failure is logged and counted, retried at
the next resync, and never stops the agent.
"""

from __future__ import annotations

import logging
import time
from ipaddress import IPv4Network

from agent.logs import event
from agent.net.iptables import FlannelRules, IptablesError, Rule

log = logging.getLogger("agent")


class _Rules(FlannelRules):
    """FlannelRules whose forward chain can be left out (--iptables-forward-rules=false)."""

    def __init__(self, network: IPv4Network, subnet: IPv4Network, *, fwd: bool, masq: bool):
        super().__init__(network, subnet, masq)
        self.with_forward = fwd

    def _sets(self) -> list[tuple[Rule, list[Rule]]]:
        return [s for s in super()._sets() if self.with_forward or s is not self.forward]


class RulesKeeper:
    """Ensures the rules for the current subnet; :meth:`tick` from the main loop."""

    def __init__(self, network: IPv4Network, *, forward: bool, ip_masq: bool, resync: float):
        self.network = network
        self.forward = forward
        self.ip_masq = ip_masq
        self.resync = resync
        self.errors = 0
        self._rules: _Rules | None = None
        self._subnet: IPv4Network | None = None
        self._next = 0.0

    @property
    def wanted(self) -> bool:
        """False when neither forward nor masquerade rules are asked for."""
        return self.forward or self.ip_masq

    def apply(self, subnet: IPv4Network) -> bool:
        """Program the rules for SUBNET now; True on success (or nothing to do). The first time
        (and on a new subnet), a previous run's masquerade rules go when ip-masq is off."""
        if not self.wanted:
            return True
        if self._rules is None or subnet != self._subnet:
            self._subnet = subnet
            try:
                self._rules = _Rules(self.network, subnet, fwd=self.forward, masq=self.ip_masq)
                self._rules.drop_unwanted()
            except (IptablesError, OSError) as exc:
                return self._failed(exc)
        self._next = time.monotonic() + self.resync
        try:
            self._rules.ensure()
        except (IptablesError, OSError) as exc:
            return self._failed(exc)
        return True

    def tick(self) -> None:
        """Re-check the rules when the resync interval has passed."""
        if self._subnet is not None and time.monotonic() >= self._next:
            self.apply(self._subnet)

    def teardown(self) -> None:
        """Remove both chains and their jumps (--cleanup-on-exit)."""
        if self._rules is None:
            return
        try:
            self._rules.teardown()
        except (IptablesError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> bool:
        self.errors += 1
        self._next = time.monotonic() + self.resync
        event(log, logging.ERROR, "iptables-failed", str(exc), retry_in=self.resync)
        return False
