"""firewalld's verdict on one packet, from what `firewall-cmd` lists, and the command that lets
it through: the firewall check's firewalld half.

The order is firewalld 1.x's (nftables backend), as `nft list table inet firewalld` shows it on
Debian 12's firewalld 1.3.3 (tests/unit/overlayctl/doctor/fixtures/firewalld/):

- to the host (filter_IN_<zone>): the ingress zone (the zone naming the source address, else
  the one holding the interface, else the default zone); the policies towards HOST of negative
  priority, then the zone's own rules, then those policies of positive priority, then the
  zone's target (`default` rejects);
- forwarded (filter_FWD_<zone>): the ingress zone again; the policies from it (or ANY) to the
  egress zone (or ANY) of negative priority, the zone's forwarding to its own interfaces
  (`forward: yes`), the positive ones, then the ingress zone's target (docker's zone has
  ACCEPT; `default` rejects). A zone's rich rules apply to the host only, never here.

Inside one policy or zone: rich rules of negative priority in order, then priority 0's drops and
rejects, then its ports and priority 0's accepts, then positive priorities; a policy's target
ends the walk unless it is CONTINUE. Replies are accepted before any of this: doctor asks about
new flows. A rich rule naming what a packet alone cannot tell (a service, an ipset, NOT, a MAC,
a source port, ICMP) is not judged: it neither accepts nor drops here.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from overlayctl.doctor.facts import HostFacts
from overlayctl.doctor.rulesets import Packet

Net = ipaddress.IPv4Network
ACTIONS = ("accept", "drop", "reject")
# What a rule says that a packet's addresses, protocol and port answer; anything else left is
# _UNJUDGED.
_JUDGED = re.compile(
    r'\b(?:source|destination) address="[^"]*"|\bport port="[^"]*" '
    r'protocol="\w+"|\b(?:priority|family)="[^"]*"'
)
_UNJUDGED = re.compile(r"\b(service|NOT|ipset|mac|source-port|icmp-block|icmp-type|protocol)\b")


@dataclass(frozen=True)
class RichRule:
    """One `rule ...` line as firewall-cmd lists it."""

    text: str
    priority: int
    action: str | None  # accept, drop, reject; None: a log or mark only
    source: Net | None
    destination: Net | None
    port: tuple[str, int, int] | None  # (protocol, low, high)
    judged: bool  # False: it names something a packet alone cannot tell
    ipv6: bool


def parse_rich_rules(text: str) -> list[RichRule]:
    """A zone's or policy's `rich rules:` value (one rule a line) -> its rules."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("rule"):
            continue
        prio = re.search(r'\bpriority="(-?\d+)"', line)
        actions = re.findall(r"\b(accept|drop|reject)\b(?![\S\"])", line)
        port = re.search(r'\bport port="(\d+)(?:-(\d+))?" protocol="(\w+)"', line)
        found.append(RichRule(
            line, int(prio.group(1)) if prio else 0, actions[-1] if actions else None,
            _net(r'source address="([^"]+)"', line), _net(r'destination address="([^"]+)"', line),
            (port.group(3), int(port.group(1)), int(port.group(2) or port.group(1)))
            if port else None,
            not _UNJUDGED.search(_JUDGED.sub("", line)),
            'family="ipv6"' in line,
        ))  # fmt: skip
    return found


def _net(pattern: str, line: str) -> Net | None:
    m = re.search(pattern, line)
    try:
        return ipaddress.IPv4Network(m.group(1), strict=False) if m else None
    except ValueError:  # an IPv6 address: the ipv6 flag keeps the rule out
        return None


def matches(rule: RichRule, pkt: Packet) -> bool:
    """Whether RULE surely takes PKT (a subnet counts when the rule covers part of it)."""
    if rule.ipv6 or rule.action is None or not rule.judged:
        return False
    if rule.source is not None and not rule.source.overlaps(pkt.src):
        return False
    if rule.destination is not None and not rule.destination.overlaps(pkt.dst):
        return False
    if rule.port is not None:
        proto, low, high = rule.port
        return pkt.proto == proto and pkt.dport is not None and low <= pkt.dport <= high
    return True


@dataclass(frozen=True)
class FwVerdict:
    """ACTION: accept, drop or reject. WHERE: "policy NAME" or "zone NAME". RULE: the rich rule
    that decided (None: a port, or the target: TARGET says which)."""

    action: str
    where: str
    zone: str  # the packet's ingress zone
    rule: RichRule | None = None
    target: str = ""

    @property
    def dropped(self) -> bool:
        return self.action != "accept"

    @property
    def kind_name(self) -> tuple[str, str]:
        kind, _, name = self.where.partition(" ")
        return kind, name


def zone_of(f: HostFacts, dev: str | None, src: Net) -> str:
    """The zone a packet from SRC arriving on DEV is in: a zone naming the source, else the
    one holding the interface, else the default zone."""
    for zone, d in f.firewalld_zones.items():
        for s in d.get("sources", "").split():
            if re.fullmatch(r"[\d./]+", s) and src.subnet_of(Net(s, strict=False)):
                return zone
    for zone, d in f.firewalld_zones.items():
        if dev and dev in d.get("interfaces", "").split():
            return zone
    return default_zone(f)


def default_zone(f: HostFacts) -> str:
    marked = (z for z, d in f.firewalld_zones.items() if "default" in d.get("header", ""))
    return f.firewalld_default_zone or next(marked, "public")


def _inside(where: str, d: dict[str, str], pkt: Packet) -> FwVerdict | None:
    """The rules of one policy or zone, in firewalld's order; None: none decided."""
    rules = parse_rich_rules(d.get("rich rules", ""))
    stage = {r: (r.priority, 0 if r.priority == 0 and r.action != "accept" else 2) for r in rules}
    port = f"{pkt.dport}/{pkt.proto}"
    if pkt.dport is not None and port in d.get("ports", "").split():
        stage[None] = (0, 1)  # the ports sit with priority 0's accepts, after its drops
    for rule in sorted(stage, key=lambda r: stage[r]):
        if rule is None:
            return FwVerdict("accept", where, "")
        if matches(rule, pkt):
            return FwVerdict(str(rule.action), where, "", rule)
    return None


def _policies(f: HostFacts, ingress: str, egress: str) -> list[tuple[int, str, dict[str, str]]]:
    """The active policies from INGRESS (or ANY) to EGRESS (or ANY; HOST for the host)."""
    found = []
    for name, d in f.firewalld_policies.items():
        into = d.get("ingress-zones", "").split()
        out = d.get("egress-zones", "").split()
        if "active" not in d.get("header", "") or not (ingress in into or "ANY" in into):
            continue
        if egress in out or (egress != "HOST" and "ANY" in out):
            found.append((int(d.get("priority", "0") or 0), name, d))
    return sorted(found, key=lambda p: (p[0], p[1]))


def _walk(f: HostFacts, pkt: Packet, zone: str, egress: str) -> FwVerdict:
    policies = _policies(f, zone, egress)
    z = f.firewalld_zones.get(zone, {})
    steps = [(f"policy {name}", d) for prio, name, d in policies if prio < 0]
    steps.append((f"zone {zone}", z))
    steps += [(f"policy {name}", d) for prio, name, d in policies if prio >= 0]
    for where, d in steps:
        if where.startswith("zone ") and egress != "HOST":  # its rich rules: the host only
            own = pkt.oif and pkt.oif in z.get("interfaces", "").split()
            if zone == egress and own and z.get("forward") == "yes":
                return FwVerdict("accept", where, zone)
            continue
        found = _inside(where, d, pkt)
        if found is None:
            target = d.get("target", "CONTINUE")
            if where.startswith("policy ") and target != "CONTINUE":
                return FwVerdict(_action(target), where, zone, target=target)
            continue
        return FwVerdict(found.action, where, zone, found.rule)
    target = z.get("target", "default")
    return FwVerdict(_action(target), f"zone {zone}", zone, target=target)


def _action(target: str) -> str:
    return {"ACCEPT": "accept", "DROP": "drop"}.get(target, "reject")  # default, %%REJECT%%


def input_verdict(f: HostFacts, pkt: Packet) -> FwVerdict:
    """PKT (to this host, arriving on pkt.iif) through firewalld."""
    return _walk(f, pkt, zone_of(f, pkt.iif, pkt.src), "HOST")


def forward_verdict(f: HostFacts, pkt: Packet) -> FwVerdict:
    """PKT forwarded from pkt.iif to pkt.oif through firewalld."""
    egress = zone_of(f, pkt.oif, pkt.dst)
    return _walk(f, pkt, zone_of(f, pkt.iif, pkt.src), egress)


def evidence(f: HostFacts, v: FwVerdict, dev: str | None) -> str:
    kind, name = v.kind_name
    d = (f.firewalld_policies if kind == "policy" else f.firewalld_zones).get(name, {})
    said = (f"rich rule: {v.rule.text}" if v.rule else f"target {v.target}" if v.target
            else "no rule")  # fmt: skip
    lines = [f"{v.where}: {said}"]
    if kind == "policy":
        into, out = d.get("ingress-zones", "?"), d.get("egress-zones", "?")
        lines.append(f"policy {name}: priority {d.get('priority', '?')}, ingress {into}, "
                     f"egress {out}")  # fmt: skip
    z = f.firewalld_zones.get(v.zone, {})
    lines.append(f"{dev or 'the packet'} in zone {v.zone} (default zone {default_zone(f)}): "
                 f"target {z.get('target', '?')}, services {z.get('services', '')!r}, "
                 f"ports {z.get('ports', '')!r}")  # fmt: skip
    return "\n".join(lines)


def fix(v: FwVerdict, accept_rule: str, port: str | None, policy: str | None) -> str:
    """The firewall-cmd command that lets the packet through, permanently and now: remove the
    rich rule that names it; else add ACCEPT_RULE ahead of a catch-all drop or a policy's
    target; else, to the host, open PORT in the zone; else, forwarded, add ACCEPT_RULE to
    POLICY (overlayctl's forward policy: a zone's rich rules never see forwarded traffic), or
    with no such policy, `overlayctl init`, which installs it. `--permanent` then `--reload`:
    the permanent set is what every reload and boot brings back."""
    kind, name = v.kind_name
    if v.rule is not None and (v.rule.source is not None or v.rule.destination is not None):
        change = f"--remove-rich-rule={shlex.quote(v.rule.text)}"
    elif v.rule is None and kind == "zone" and port is not None:
        change = f"--add-port={port}"
    else:
        if kind == "zone" and port is None:
            if policy is None:
                return "overlayctl init (it installs its firewalld policies where firewalld runs)"
            kind, name = "policy", policy
        prio = min(v.rule.priority - 10, -1) if v.rule is not None else -32768
        rule = accept_rule.replace("rule ", f'rule priority="{prio}" ', 1)
        change = f"--add-rich-rule={shlex.quote(rule)}"
    return f"firewall-cmd --permanent --{kind}={name} {change} && firewall-cmd --reload"
