"""Where would the kernel's firewall send this packet? A small evaluator over `iptables-save -c`
(facts.Tables) and `nft -j list ruleset`, for the firewall and forwarding checks.

It walks the hook's chains in the kernel's order (raw, mangle, filter), rule by rule: jumps into
user chains, RETURN, goto, and the built-in chain's policy at the end. A rule matches on what it
says of -p, -s, -d, -i, -o, --dport (and multiport --dports) and their negations; any other
match (conntrack state, addrtype, a mark, ...) cannot be judged from the packet alone and counts
as "may match": a DROP behind it is a possible drop (a warning, said so in the evidence), an
ACCEPT behind it does not stop the walk. Only a rule that surely matches decides the verdict.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from overlayctl.doctor.facts import Rule, Tables

Net = ipaddress.IPv4Network
# The iptables tables (and their order) each hook passes through.
HOOK_TABLES = {
    "INPUT": (("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("mangle", "INPUT"),
              ("filter", "INPUT")),
    "FORWARD": (("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("mangle", "FORWARD"),
                ("filter", "FORWARD")),
}  # fmt: skip
DROPS = ("DROP", "REJECT")
# What a packet's own fields cannot tell: matches that "may" hold.
_KNOWN_VALUE_FLAGS = {"-p", "--protocol", "-s", "--source", "-d", "--destination", "-i",
                      "--in-interface", "-o", "--out-interface", "--dport", "--destination-port",
                      "--dports", "--destination-ports", "-j", "--jump", "-g", "--goto", "-m",
                      "--match", "--comment", "--reject-with"}  # fmt: skip


@dataclass(frozen=True)
class Packet:
    """What doctor asks about. SRC/DST are networks (a peer's subnet stands for any of its
    containers); None fields are unknown (any rule on them may match)."""

    src: Net
    dst: Net
    proto: str | None = None  # udp, tcp, icmp; None: any
    dport: int | None = None
    iif: str | None = None
    oif: str | None = None


@dataclass
class Verdict:
    """VERDICT: ACCEPT, DROP or REJECT. RULE: the rule that decided (None: a chain's POLICY).
    MAYBE: rules on the way that may have decided first (unknown matches)."""

    verdict: str
    rule: Rule | None = None
    policy_chain: str = ""  # "filter FORWARD" when the policy decided
    maybe: list[tuple[Rule, str]] = field(default_factory=list)  # (rule, why it may match)
    unsure: str = ""  # set: RULE itself may not match (what doctor cannot judge)

    @property
    def dropped(self) -> bool:
        return self.verdict in DROPS

    @property
    def maybe_accepted(self) -> list[Rule]:
        """ACCEPTs that may have taken the packet first. One accepting only ESTABLISHED or
        RELATED traffic does not count: doctor asks about new flows (a first ping, a first
        tunnel packet), which such a rule never takes."""
        return [r for r, why in self.maybe if r.target == "ACCEPT" and not _replies_only(why)]

    @property
    def maybe_dropped(self) -> list[tuple[Rule, str]]:
        return [(r, why) for r, why in self.maybe if r.target in DROPS]


def _replies_only(why: str) -> bool:
    m = re.fullmatch(r"--(?:ct)?state ([A-Z,]+)", why.strip())
    return bool(m) and "NEW" not in m.group(1).split(",")


def _net(text: str) -> Net:
    return ipaddress.IPv4Network(text, strict=False)


def _addr_match(rule_value: str, have: Net) -> bool | None:
    """Whether the packet's address (a network) is inside the rule's: True, False, None (part)."""
    want = _net(rule_value)
    if have.subnet_of(want):
        return True
    return None if want.overlaps(have) else False


def _iface_match(pattern: str, name: str | None) -> bool | None:
    if name is None:
        return None
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _port_match(spec: str, port: int | None) -> bool | None:
    if port is None:
        return None
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if int(low or 0) <= port <= int(high or low or 65535):
            return True
    return False


_SKIP = ("-m", "--match", "-j", "--jump", "-g", "--goto", "--comment", "--reject-with")


def _flag(flag: str, value: str, pkt: Packet) -> bool | None:
    """One known match of a rule against PKT (None: the packet does not say)."""
    if flag in ("-p", "--protocol"):
        return True if value == "all" else None if pkt.proto is None else value == pkt.proto
    if flag in ("-s", "--source", "-d", "--destination"):
        return _addr_match(value, pkt.src if flag in ("-s", "--source") else pkt.dst)
    if flag in ("-i", "--in-interface"):
        return _iface_match(value, pkt.iif)
    if flag in ("-o", "--out-interface"):
        return _iface_match(value, pkt.oif)
    return _port_match(value, pkt.dport)


def match(rule: Rule, pkt: Packet) -> tuple[bool | None, str]:
    """(True | False | None for "may match", what made it uncertain)."""
    unsure: list[str] = []
    args = list(rule.args)
    i = 0
    while i < len(args):
        neg = args[i] == "!"
        i += neg
        flag = args[i] if i < len(args) else ""
        if flag in _SKIP:
            i += 2
        elif flag in _KNOWN_VALUE_FLAGS:
            got = _flag(flag, args[i + 1] if i + 1 < len(args) else "", pkt)
            if got is not None and neg:
                got = not got
            if got is False:
                return False, ""
            if got is None:
                unsure.append(" ".join((["!"] if neg else []) + args[i : i + 2]))
            i += 2
        elif flag.startswith("-"):
            # Another module's option (--ctstate, --dst-type, --mark, ...): its values follow.
            j = i + 1
            while j < len(args) and not args[j].startswith("-") and args[j] != "!":
                j += 1
            unsure.append(" ".join((["!"] if neg else []) + args[i:j]))
            i = j
        else:
            i += 1
    return (None if unsure else True), ", ".join(unsure)


def walk(tables: Tables, table: str, chain: str, pkt: Packet, depth: int = 0) -> Verdict | None:
    """The verdict of CHAIN for PKT; None: it fell through (a user chain's end, or RETURN)."""
    chains = tables.get(table, {})
    here = chains.get(chain)
    if here is None or depth > 20:
        return None
    maybe: list[tuple[Rule, str]] = []
    for rule in here.rules:
        got, why = match(rule, pkt)
        target = rule.target
        if got is False:
            continue
        if target in chains:  # a user chain
            inner = walk(tables, table, target, pkt, depth + 1)
            decided = inner is not None and inner.verdict != "CONTINUE"
            if decided and got is True:
                inner.maybe[:0] = maybe
                return inner
            maybe.extend(inner.maybe if inner is not None else [])
            if decided and inner.rule is not None:  # the jump itself may not happen
                maybe.append((inner.rule, why))
            if not decided and rule.goto and got is True:  # a goto's chain ends where ours does
                break
        elif target == "RETURN" and got is True:
            break  # a built-in chain's RETURN still ends in its policy, below
        elif target in ("ACCEPT", *DROPS):
            if got is True:
                return Verdict(target, rule, maybe=maybe)
            maybe.append((rule, why))
    if here.policy in ("ACCEPT", "DROP"):
        return Verdict(here.policy, None, f"{table} {chain}", maybe)
    return _fell(maybe)


def _fell(maybe: list[tuple[Rule, str]]) -> Verdict | None:
    # Falling through a user chain carries its uncertain rules along, as a pseudo-verdict that
    # walk()'s caller merges; no decided rule means "continue".
    return Verdict("CONTINUE", None, maybe=maybe) if maybe else None


def hook_verdict(tables: Tables, hook: str, pkt: Packet) -> Verdict:
    """PKT through every table of HOOK, in the kernel's order: the first drop, else ACCEPT."""
    maybe: list[tuple[Rule, str]] = []
    last = Verdict("ACCEPT")
    for table, chain in HOOK_TABLES[hook]:
        got = walk(tables, table, chain, pkt)
        if got is None:
            continue
        maybe.extend(got.maybe)
        if got.dropped:
            got.maybe = maybe
            return got
        if got.verdict == "ACCEPT" and got.rule is not None:
            last = got
    last.maybe = maybe
    return last


# -- nftables (tables not made by iptables-nft or firewalld) -----------------------------------

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")


def nft_foreign_tables(ruleset: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(family, name) of the tables someone wrote with nft itself."""
    out = []
    for item in (ruleset or {}).get("nftables", []):
        t = item.get("table")
        if not t:
            continue
        ipt = t.get("family") in ("ip", "ip6") and t.get("name") in IPTABLES_TABLES
        if not ipt and t.get("name") != "firewalld" and t.get("family") in ("ip", "inet"):
            out.append((t["family"], t["name"]))
    return out


@dataclass(frozen=True)
class NftDrop:
    table: str
    chain: str
    text: str  # the rule (or "policy drop") as nft would list it
    packets: int | None
    handle: int | None
    sure: bool  # False: an unknown match on the way


def nft_drops(ruleset: dict[str, Any] | None, hook: str, pkt: Packet) -> list[NftDrop]:
    """The drops PKT meets in foreign nft base chains of HOOK (input, forward)."""
    items = (ruleset or {}).get("nftables", [])
    foreign = set(nft_foreign_tables(ruleset))
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
    found = []
    for key, c in sorted(chains.items(), key=lambda kv: kv[1].get("prio", 0)):
        if (key[0], key[1]) not in foreign or c.get("hook") != hook:
            continue
        hit = _nft_chain(key, rules, pkt, True, 0)
        if hit == "accept":
            continue
        if hit is None and c.get("policy") == "drop":
            hit = NftDrop(f"{key[0]} {key[1]}", key[2], "policy drop", None, None, True)
        if isinstance(hit, NftDrop):
            found.append(hit)
    return found


def _nft_rule(r: dict[str, Any], pkt: Packet) -> tuple[bool | None, str, str, int | None]:
    """(matches, verdict, jump target, packets) of one nft rule for PKT."""
    got: bool | None = True
    verdict, target, packets = "", "", None
    for expr in r.get("expr", []):
        if "match" in expr:
            m = _nft_match(expr["match"], pkt)
            if m is False:
                return False, "", "", None
            got = got and m
        elif "counter" in expr:
            packets = (expr["counter"] or {}).get("packets")
        elif "jump" in expr or "goto" in expr:
            verdict, target = "jump", (expr.get("jump") or expr.get("goto"))["target"]
        else:
            named = [k for k in ("accept", "drop", "reject", "return") if k in expr]
            if named:
                verdict = named[0]
            else:
                got = None if got else got
    return got, verdict, target, packets


def _nft_chain(key: tuple[str, str, str], rules: dict[tuple[str, str, str], list[dict[str, Any]]],
               pkt: Packet, sure: bool, depth: int) -> NftDrop | str | None:  # fmt: skip
    """The drop PKT meets in chain KEY, "accept" if a rule surely accepts it, None: falls
    through (or returns)."""
    for r in rules.get(key, []):
        got, verdict, target, packets = _nft_rule(r, pkt)
        if got is False:
            continue
        if verdict == "jump" and depth < 20:
            inner = _nft_chain((key[0], key[1], target), rules, pkt, sure and got is True,
                               depth + 1)  # fmt: skip
            if inner is not None:
                return inner
        elif verdict in ("drop", "reject"):
            return NftDrop(f"{key[0]} {key[1]}", key[2], f"rule handle {r.get('handle')}",
                           packets, r.get("handle"), sure and got is True)  # fmt: skip
        elif verdict == "accept" and got is True:
            return "accept"
        elif verdict == "return" and got is True:
            return None
    return None


def _nft_match(m: dict[str, Any], pkt: Packet) -> bool | None:
    left, right, op = m.get("left") or {}, m.get("right"), m.get("op", "==")
    payload, meta = left.get("payload") or {}, left.get("meta") or {}
    have: Any
    if payload.get("field") == "dport":
        have = pkt.dport
        proto = payload.get("protocol")
        if proto not in ("th", None) and pkt.proto is not None and proto != pkt.proto:
            return op == "!="
    elif payload.get("field") in ("saddr", "daddr"):
        have = pkt.src if payload["field"] == "saddr" else pkt.dst
    elif meta.get("key") == "l4proto":
        have = pkt.proto
    elif meta.get("key") in ("iifname", "oifname"):
        have = pkt.iif if meta["key"] == "iifname" else pkt.oif
    else:
        return None
    if have is None:
        return None
    values = right.get("set") if isinstance(right, dict) and "set" in right else [right]
    hits: list[bool | None] = [_nft_value(v, have) for v in values]
    got = True if True in hits else (None if None in hits else False)
    if op == "!=" and got is not None:
        return not got
    return got


def _nft_value(value: Any, have: Any) -> bool | None:
    if isinstance(have, Net):
        if isinstance(value, dict) and "prefix" in value:
            return _addr_match(f"{value['prefix']['addr']}/{value['prefix']['len']}", have)
        return _addr_match(str(value), have) if isinstance(value, str) else None
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return isinstance(have, int) and int(low) <= have <= int(high)
    return str(value) == str(have)
