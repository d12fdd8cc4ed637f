"""Keeps flannel's iptables rules (agent/net/iptables.py) in place while the agent runs.

FLANNEL-FWD unless ``--iptables-forward-rules=false``; FLANNEL-POSTRTG with ``--ip-masq``.
Programmed with the data plane, re-checked every ``--iptables-resync`` seconds (flanneld does
the same: a docker or firewalld restart flushes them), rebuilt when our subnet changes, and
removed on exit only with ``--cleanup-on-exit``. A failure is logged and counted, retried at
the next resync, and never stops the agent.

The same goes for the peers-only chain OVERLAY-PEERS (agent/net/peerchain.py) of the vxlan and
udp backends: replaced whenever the peer set changes (:meth:`RulesKeeper.set_peers`, from the
watch thread), re-checked at every resync and rebuilt if someone deleted or edited it. Until
the first peer set is known (the watch's first listing) a chain left by a previous run is
kept as it is: traffic from the peers it lets in keeps flowing across an agent restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from agent.logs import event
from agent.net.iptables import FlannelRules, IptablesError, Rule
from agent.net.peerchain import PEERS_CHAIN, PeerChain

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

    def __init__(
        self,
        network: IPv4Network,
        *,
        forward: bool,
        ip_masq: bool,
        resync: float,
        peer_port: int | None = None,
    ):
        self.network = network
        self.forward = forward
        self.ip_masq = ip_masq
        self.resync = resync
        self.errors = 0
        self._rules: _Rules | None = None
        self._subnet: IPv4Network | None = None
        self._next = 0.0
        self.peer_port = peer_port  # None: no peers-only chain (host-gw, test backends)
        self._chain: PeerChain | None = None
        self._peer_ips: frozenset[IPv4Address] | None = None  # None until the first set
        self._peers_next = 0.0
        self._peers_lock = threading.Lock()  # set_peers (watch thread) vs tick (main loop)

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
        if self._peer_ips is not None and time.monotonic() >= self._peers_next:
            self._sync_peers(check_first=True)

    def set_peers(self, ips: Iterable[IPv4Address]) -> bool:
        """Let tunnel packets in from IPS only (nothing without a tunnel port); True on success."""
        if self.peer_port is None:
            return True
        self._peer_ips = frozenset(ips)
        return self._sync_peers(check_first=False)

    def _sync_peers(self, *, check_first: bool) -> bool:
        with self._peers_lock:
            ips = self._peer_ips
            if ips is None or self.peer_port is None:
                return True
            self._peers_next = time.monotonic() + self.resync
            try:
                if self._chain is None:
                    self._chain = PeerChain(self.peer_port)
                if check_first and self._chain.check(ips):
                    return True
                self._chain.apply(ips)
            except (IptablesError, OSError) as exc:
                return self._failed(exc)
        event(log, logging.WARNING if check_first else logging.INFO, "peers-chain",
              "re-asserted (it was missing or changed)" if check_first else "updated",
              chain=PEERS_CHAIN, port=self.peer_port, peers=len(ips))  # fmt: skip
        return True

    def teardown(self) -> None:
        """Remove both chains and their jumps, and the peers chain (--cleanup-on-exit)."""
        try:
            if self._rules is not None:
                self._rules.teardown()
            with self._peers_lock:
                self._peer_ips = None
                if self.peer_port is not None:
                    (self._chain or PeerChain(self.peer_port)).teardown()
        except (IptablesError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> bool:
        self.errors += 1
        self._next = time.monotonic() + self.resync
        event(log, logging.ERROR, "iptables-failed", str(exc), retry_in=self.resync)
        return False
