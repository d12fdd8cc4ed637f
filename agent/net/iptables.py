"""flannel's iptables rules: FLANNEL-FWD (filter) and, with --ip-masq, FLANNEL-POSTRTG (nat).

Same chains, rule specs and comments as flanneld, so a host moving between flanneld and
overlay-agent never ends up with duplicates:

- filter FORWARD jumps to FLANNEL-FWD, which accepts traffic from and to the Network (docker
  sets the FORWARD policy to DROP; without these cross-host traffic dies, flannel #609);
- nat POSTROUTING jumps to FLANNEL-POSTRTG: no NAT inside the Network (own subnet -> Network,
  Network -> own subnet), none for outside -> own subnet, MASQUERADE Network -> outside except
  multicast, and MASQUERADE outside -> Network (the host itself talking to remote containers).

Runs the ``iptables`` found on PATH (whatever backend it is: nft or legacy) with argument
lists, never a shell. Idempotent: ``-C`` before adding, chains created only when missing, the
jump inserted once; a chain whose content differs (an old subnet) is rebuilt. ``teardown``
removes the jumps and both chains.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

log = logging.getLogger(__name__)

FORWARD_CHAIN = "FLANNEL-FWD"
MASQ_CHAIN = "FLANNEL-POSTRTG"
FORWARD_COMMENT = "flanneld forward"
MASQ_COMMENT = "flanneld masq"
MULTICAST = "224.0.0.0/4"


class IptablesError(Exception):
    """An iptables command failed (the message has the command and its stderr)."""


@dataclass(frozen=True)
class Rule:
    """One rule: TABLE, CHAIN and the rule spec after the chain name."""

    table: str
    chain: str
    spec: tuple[str, ...]


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", text)


def forward_rules(network: IPv4Network) -> tuple[Rule, list[Rule]]:
    """The FORWARD jump and the FLANNEL-FWD rules for NETWORK."""
    net = str(network)
    jump = Rule("filter", "FORWARD", (*_comment(FORWARD_COMMENT), "-j", FORWARD_CHAIN))
    body = [
        Rule("filter", FORWARD_CHAIN, ("-s", net, *_comment(FORWARD_COMMENT), "-j", "ACCEPT")),
        Rule("filter", FORWARD_CHAIN, ("-d", net, *_comment(FORWARD_COMMENT), "-j", "ACCEPT")),
    ]
    return jump, body


def masq_rules(
    network: IPv4Network, subnet: IPv4Network, random_fully: bool = False
) -> tuple[Rule, list[Rule]]:
    """The POSTROUTING jump and the FLANNEL-POSTRTG rules for NETWORK and our SUBNET."""
    net, own = str(network), str(subnet)
    masq = ("-j", "MASQUERADE", "--random-fully") if random_fully else ("-j", "MASQUERADE")
    tag = _comment(MASQ_COMMENT)
    jump = Rule("nat", "POSTROUTING", (*tag, "-j", MASQ_CHAIN))
    specs = [
        ("-s", own, "-d", net, *tag, "-j", "RETURN"),  # inside the overlay: no NAT
        ("-s", net, "-d", own, *tag, "-j", "RETURN"),
        ("!", "-s", net, "-d", own, *tag, "-j", "RETURN"),  # outside -> our containers
        ("-s", net, "!", "-d", MULTICAST, *tag, *masq),  # containers -> outside
        ("!", "-s", net, "-d", net, *tag, *masq),  # this host -> remote containers
    ]
    return jump, [Rule("nat", MASQ_CHAIN, spec) for spec in specs]


def restore_args(spec: Sequence[str]) -> str:
    """SPEC as one iptables-restore line: it reads double quotes only (not shlex's single
    ones); arguments with quotes or newlines never occur in our rules and are refused."""
    for arg in spec:
        if any(c in arg for c in "\"'\n\\"):
            raise IptablesError(f"cannot write {arg!r} for iptables-restore")
    return " ".join(f'"{a}"' if not a or " " in a else a for a in spec)


def parse_save(text: str) -> dict[str, list[list[str]]]:
    """One table of ``iptables-save`` output: chain -> its rules (argv after ``-A CHAIN``)."""
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            name = line[1:].split(maxsplit=1)
            if name:  # a bare ":" names no chain
                chains.setdefault(name[0], [])
        elif line.startswith("-A "):
            try:
                parts = shlex.split(line)
            except ValueError:
                continue  # not ours to judge
            if len(parts) >= 2:
                chains.setdefault(parts[1], []).append(parts[2:])
    return chains


class Iptables:
    """Runs one ``iptables`` binary (the one on PATH unless given) with the xtables lock."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        found = binary or shutil.which("iptables")
        if not found:
            raise IptablesError("iptables not found on PATH")
        self.binary = found
        self.timeout = timeout

    def _exec(
        self, argv: list[str], check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if check and proc.returncode != 0:
            raise IptablesError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
        return proc

    def run(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._exec([self.binary, "-w", "5", *args], check)

    def restore(self, text: str) -> None:
        """Apply TEXT (iptables-save format) with ``iptables-restore --noflush``: each table's
        COMMIT is one atomic replacement, and tables and chains it does not name are kept."""
        self._exec([self.binary + "-restore", "-w", "5", "--noflush"], stdin=text)

    def save(self, table: str) -> dict[str, list[list[str]]]:
        """TABLE as ``iptables-save`` prints it, in one run: chain -> its rules, each the
        argv after ``-A CHAIN`` (a chain without rules maps to [])."""
        return parse_save(self._exec([self.binary + "-save", "-t", table]).stdout)

    def listing(self, table: str, chain: str) -> list[str] | None:
        """CHAIN's rules as ``iptables -S`` prints them (``-A`` lines); None if it is missing."""
        proc = self.run(["-t", table, "-S", chain], check=False)
        if proc.returncode != 0:
            return None
        return [line for line in proc.stdout.splitlines() if line.startswith("-A ")]

    def exists(self, rule: Rule) -> bool:
        return (
            self.run(["-t", rule.table, "-C", rule.chain, *rule.spec], check=False).returncode == 0
        )

    def chain_exists(self, table: str, chain: str) -> bool:
        return self.run(["-t", table, "-S", chain], check=False).returncode == 0

    def delete_all(self, rule: Rule, limit: int = 100) -> int:
        """Delete every copy of RULE (bounded); how many there were."""
        count = 0
        while count < limit and self.exists(rule):
            self.run(["-t", rule.table, "-D", rule.chain, *rule.spec])
            count += 1
        return count

    def delete_chain(self, table: str, chain: str) -> bool:
        if not self.chain_exists(table, chain):
            return False
        self.run(["-t", table, "-F", chain])
        self.run(["-t", table, "-X", chain])
        return True


class FlannelRules:
    """flannel's forward and masquerade rules for one Network and our own subnet."""

    def __init__(
        self,
        network: IPv4Network,
        subnet: IPv4Network,
        ip_masq: bool,
        iptables: Iptables | None = None,
        random_fully: bool = False,
    ) -> None:
        self.ipt = iptables or Iptables()
        self.forward = forward_rules(network)
        self.masq = masq_rules(network, subnet, random_fully)
        self.ip_masq = ip_masq

    def _sets(self) -> list[tuple[Rule, list[Rule]]]:
        return [self.forward, self.masq] if self.ip_masq else [self.forward]

    def ensure(self) -> bool:
        """Create whatever is missing (chains before jumps); True if anything changed.

        One ``iptables-save`` per table reads what is there, and one ``iptables-restore
        --noflush`` writes what is missing (a chain declared there is created, or flushed and
        refilled): 2 runs at start and 1 per re-check, where one ``iptables`` run per check
        and per change took 8 at start. With 255 agents starting on one machine those runs
        (each taking the xtables lock) cost 8 of the 9 seconds from the config to all ready.
        A rule that reads differently from ours is confirmed with ``iptables -C`` before
        anything is rebuilt, so a printing difference can never duplicate a rule.
        """
        sets = self._sets()
        state = {table: self.ipt.save(table) for table in {jump.table for jump, _ in sets}}
        lines: dict[str, list[str]] = {}
        for jump, body in sets:
            chains, out = state[jump.table], lines.setdefault(jump.table, [])
            chain = body[0].chain
            have = chains.get(chain)
            if have != [list(r.spec) for r in body] and not (
                have is not None
                and len(have) == len(body)
                and all(self.ipt.exists(r) for r in body)
            ):
                out.append(f":{chain} - [0:0]")
                out += [f"-A {chain} {restore_args(r.spec)}" for r in body]
            if list(jump.spec) not in chains.get(jump.chain, []) and not self.ipt.exists(jump):
                out.append(f"-I {jump.chain} 1 {restore_args(jump.spec)}")
        text = "".join(
            f"*{table}\n" + "\n".join(todo) + "\nCOMMIT\n" for table, todo in lines.items() if todo
        )
        if not text:
            return False
        self.ipt.restore(text)
        log.info("iptables: flannel rules programmed (ip-masq %s)", self.ip_masq)
        return True

    def drop_unwanted(self) -> bool:
        """Without ip-masq, remove a previous run's masquerade jump and chain (ip_masq turned
        off on a running cluster); True if there were any."""
        if self.ip_masq:
            return False
        jump, body = self.masq
        if body[0].chain not in self.ipt.save(jump.table):
            return False  # one run; a jump cannot outlive the chain it jumps to
        found = self.ipt.delete_all(jump) > 0
        found |= self.ipt.delete_chain(jump.table, body[0].chain)
        if found:
            log.info("iptables: removed %s (ip-masq is off)", body[0].chain)
        return found

    def teardown(self) -> None:
        """Remove the jumps and the chains (both, even if ip-masq was off: a previous run's)."""
        for jump, body in (self.forward, self.masq):
            self.ipt.delete_all(jump)
            self.ipt.delete_chain(jump.table, body[0].chain)
