"""overlay-agent's options: flanneld's flag names, ``FLANNELD_*`` env, an optional config file.

Precedence (highest first): command line, ``FLANNELD_<NAME>`` env (``FLANNEL_ETCD_ENDPOINTS``
and ``FLANNEL_ETCD_PREFIX`` of the seed's /etc/sysconfig/flanneld as fallbacks), the
``--config-file`` (KEY=VALUE lines or a YAML/JSON mapping of the same names), the defaults.
Go-style spellings flanneld accepts are accepted too: ``-iface=eth0`` and ``--ip-masq=true``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.etcd_types import parse_endpoint
from agent.files import DEFAULT_DOCKER_FILE, DEFAULT_SUBNET_FILE, parse_env
from agent.logs import LEVELS

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"
BOOL_FLAGS = ("ip-masq", "cleanup-on-exit", "logtostderr", "iptables-forward-rules")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True)
class AgentOptions:
    """Every option, validated. Durations are in seconds."""

    etcd_endpoints: tuple[str, ...] = (DEFAULT_ENDPOINTS,)
    etcd_prefix: str = DEFAULT_PREFIX
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = field(default=None, repr=False)
    etcd_transport: str = "http"
    ifaces: tuple[str, ...] = ()
    iface_regexes: tuple[str, ...] = ()
    public_ip: IPv4Address | None = None
    subnet_file: Path = DEFAULT_SUBNET_FILE
    docker_opts_file: Path = DEFAULT_DOCKER_FILE
    ip_masq: bool = False
    iptables_forward_rules: bool = True
    iptables_resync: float = 5.0
    renew_margin: float = 3600.0
    lease_ttl: int = 24 * 3600
    healthz_ip: str = "127.0.0.1"
    healthz_port: int = 0
    cleanup_on_exit: bool = False
    log_level: str = "info"
    config_poll_interval: float = 10.0
    conflict_check_interval: float = 300.0

    def describe(self) -> dict[str, Any]:
        """The options for the startup log line; the password is never included."""
        return {
            "etcd_endpoints": ",".join(self.etcd_endpoints),
            "etcd_prefix": self.etcd_prefix,
            "etcd_tls": bool(self.etcd_cafile or self.etcd_certfile),
            "etcd_user": self.etcd_username,
            "iface": ",".join(self.ifaces) or None,
            "iface_regex": ",".join(self.iface_regexes) or None,
            "public_ip": self.public_ip,
            "subnet_file": self.subnet_file,
            "docker_opts_file": self.docker_opts_file,
            "ip_masq": self.ip_masq,
            "iptables_forward_rules": self.iptables_forward_rules,
            "lease_ttl": self.lease_ttl,
            "renew_margin": int(self.renew_margin),
            "healthz": f"{self.healthz_ip}:{self.healthz_port}" if self.healthz_port else "off",
            "cleanup_on_exit": self.cleanup_on_exit,
        }


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``24h``, ``1h30m``, ``90s``, ``500ms``) or a number."""
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"{text!r} is not a duration (e.g. 24h, 90m, 3600s)")
    return total


class Duration(click.ParamType):
    """A Go-style duration in seconds, > 0."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be above zero", param, ctx)
        return seconds


class IPAddress(click.ParamType):
    """An IP address (IPv4 only unless ``v6``)."""

    name = "ip"

    def __init__(self, v6: bool = False) -> None:
        self.v6 = v6

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            addr = ipaddress.ip_address(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)
        if not self.v6 and addr.version != 4:
            self.fail(f"{value!r} is not an IPv4 address", param, ctx)
        return addr


def _endpoints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in str(value).split(",") if u.strip())
    if not urls:
        raise click.BadParameter("no endpoint given", ctx, param)
    for url in urls:
        try:
            parse_endpoint(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc
    return urls


def _split_commas(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or ())
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())


def _regexes(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value or ())
    for item in items:
        try:
            re.compile(item)
        except re.error as exc:
            raise click.BadParameter(f"{item!r} is not a regular expression: {exc}") from exc
    return items


def _config_key(key: str) -> str:
    name = str(key).strip().lstrip("-").lower().replace("-", "_")
    for prefix in ("flanneld_", "flannel_"):
        name = name.removeprefix(prefix)
    return name


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Read the file into Click's default_map (below flags and env, above the defaults)."""
    if not value:
        return
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}", ctx, param) from exc
    import yaml  # noqa: PLC0415 - only for --config-file: 2 MB less RSS for every agent

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        data = parse_env(text)
        if not data and text.strip():
            raise click.BadParameter(
                f"{value}: expected KEY=VALUE lines or a YAML/JSON mapping", ctx, param
            )
    params = {p.name: p for p in ctx.command.params if p.name and p.expose_value}
    defaults: dict[str, Any] = {}
    for key, raw in data.items():
        name = _config_key(key)
        target = params.get(name)
        if target is None:
            raise click.BadParameter(f"{value}: unknown option {key!r}", ctx, param)
        wrap = getattr(target, "multiple", False) and not isinstance(raw, list)
        defaults[name] = [raw] if wrap else raw
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def normalize_argv(args: Sequence[str]) -> list[str]:
    """Go flag spellings to Click's: ``-iface=x`` -> ``--iface=x``, ``--ip-masq=false`` ->
    ``--no-ip-masq``. Everything after ``--`` is left alone."""
    out: list[str] = []
    for i, given in enumerate(args):
        if given == "--":
            return out + list(args[i:])
        arg = "-" + given if re.match(r"^-[a-z][a-z0-9_-]+", given) else given
        name, eq, value = arg[2:].partition("=")
        if arg.startswith("--") and eq and name in BOOL_FLAGS:
            truth = value.strip().lower()
            if truth in ("1", "t", "true", "yes", "y", "on"):
                arg = f"--{name}"
            elif truth in ("0", "f", "false", "no", "n", "off", ""):
                arg = f"--no-{name}"
        out.append(arg)
    return out


_ENV_HELP = "Every option can also be set as FLANNELD_<NAME> (e.g. FLANNELD_ETCD_ENDPOINTS)."


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FLANNELD"},
    epilog=_ENV_HELP,
)
@click.version_option(__version__, prog_name="overlay-agent")
@click.option(
    "--config-file",
    is_eager=True,
    expose_value=False,
    callback=_load_config_file,
    help="KEY=VALUE or YAML/JSON file with these options (names as the flags).",
)
@click.option(
    "--etcd-endpoints",
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    envvar=["FLANNELD_ETCD_ENDPOINTS", "FLANNEL_ETCD_ENDPOINTS"],
    callback=_endpoints,
    help="Comma-separated etcd client URLs.",
)
@click.option(
    "--etcd-prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    envvar=["FLANNELD_ETCD_PREFIX", "FLANNEL_ETCD_PREFIX"],
    help="etcd prefix holding config and subnets/.",
)
@click.option("--etcd-cafile", type=click.Path(exists=True, dir_okay=False), help="etcd CA file.")
@click.option("--etcd-certfile", type=click.Path(exists=True, dir_okay=False), help="Client cert.")
@click.option("--etcd-keyfile", type=click.Path(exists=True, dir_okay=False), help="Client key.")
@click.option("--etcd-username", help="etcd user (with a password).")
@click.option("--etcd-password", help="etcd password (better: env or --etcd-password-file).")
@click.option(
    "--etcd-password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the etcd password.",
)
@click.option(
    "--etcd-transport",
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    envvar="OVERLAY_AGENT_ETCD_TRANSPORT",
    help="etcd's JSON gateway (standard library) or gRPC (the pyetcd library).",
)
@click.option(
    "--iface", multiple=True, callback=_split_commas, help="Interface name or IP (repeatable)."
)
@click.option("--iface-regex", multiple=True, callback=_regexes, help="Interface regex (repeat).")
@click.option("--public-ip", type=IPAddress(), help="IP peers use to reach this host.")
@click.option(
    "--subnet-file", default=str(DEFAULT_SUBNET_FILE), show_default=True, help="subnet.env path."
)
@click.option(
    "--docker-opts-file",
    default=str(DEFAULT_DOCKER_FILE),
    show_default=True,
    help="DOCKER_NETWORK_OPTIONS file.",
)
@click.option("--ip-masq/--no-ip-masq", default=False, help="Masquerade traffic leaving Network.")
@click.option(
    "--iptables-forward-rules/--no-iptables-forward-rules",
    default=True,
    help="Accept the Network in FORWARD (chain FLANNEL-FWD).  [default: on]",
)
@click.option(
    "--iptables-resync",
    type=Duration(),
    default="5s",
    show_default=True,
    help="How often to re-check the iptables rules.",
)
@click.option(
    "--subnet-lease-renew-margin",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="Minutes before expiry to renew the lease.",
)
@click.option(
    "--subnet-lease-ttl", type=Duration(), default="24h", show_default=True, help="Lease TTL."
)
@click.option(
    "--healthz-ip",
    type=IPAddress(v6=True),
    default="127.0.0.1",
    show_default=True,
    help="Address of the HTTP server (flannel: 0.0.0.0).",
)
@click.option(
    "--healthz-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of /healthz, /readyz, /metrics (0 = off).",
)
@click.option(
    "--cleanup-on-exit/--no-cleanup-on-exit",
    default=False,
    help="On exit remove the data plane and revoke the lease (default: keep both).",
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Log threshold (logs: key=value lines on stderr).",
)
@click.option(
    "--config-poll-interval",
    type=Duration(),
    default="10s",
    show_default=True,
    help="How often to re-read a missing or invalid <prefix>/config.",
)
@click.option(
    "--conflict-check-interval",
    type=Duration(),
    default="5m",
    show_default=True,
    help="How often to look for duplicate subnets and PublicIPs among all leases.",
)
@click.option("--logtostderr/--no-logtostderr", default=None, hidden=True)
@click.option("--log_dir", "--log-dir", "log_dir", default=None, hidden=True)
def command(**kw: Any) -> tuple[AgentOptions, list[str]]:
    """Lease a subnet in etcd, program the overlay data plane, write /run/flannel/subnet.env."""
    ignored = [f"--{n}" for n in ("logtostderr", "log_dir") if kw[n] is not None]
    password = kw["etcd_password"]
    if kw["etcd_password_file"]:
        password = Path(kw["etcd_password_file"]).read_text(encoding="utf-8").strip()
    if bool(kw["etcd_username"]) != bool(password):
        raise click.BadParameter(
            "--etcd-username and a password must be given together", param_hint="--etcd-username"
        )
    if bool(kw["etcd_certfile"]) != bool(kw["etcd_keyfile"]):
        raise click.BadParameter(
            "--etcd-certfile and --etcd-keyfile must be given together",
            param_hint="--etcd-certfile",
        )
    ttl = int(kw["subnet_lease_ttl"])
    margin = kw["subnet_lease_renew_margin"] * 60.0
    if margin >= ttl:
        raise click.BadParameter(
            f"{kw['subnet_lease_renew_margin']} minutes is not below the lease TTL ({ttl}s)",
            param_hint="--subnet-lease-renew-margin",
        )
    prefix = str(kw["etcd_prefix"]).strip()
    if not prefix.startswith("/"):
        raise click.BadParameter(f"{prefix!r} must start with /", param_hint="--etcd-prefix")
    opts = AgentOptions(
        etcd_endpoints=kw["etcd_endpoints"],
        etcd_prefix=prefix.rstrip("/") or "/",
        etcd_cafile=kw["etcd_cafile"],
        etcd_certfile=kw["etcd_certfile"],
        etcd_keyfile=kw["etcd_keyfile"],
        etcd_username=kw["etcd_username"],
        etcd_password=password,
        etcd_transport=kw["etcd_transport"],
        ifaces=kw["iface"],
        iface_regexes=kw["iface_regex"],
        public_ip=kw["public_ip"],
        subnet_file=Path(kw["subnet_file"]),
        docker_opts_file=Path(kw["docker_opts_file"]),
        ip_masq=kw["ip_masq"],
        iptables_forward_rules=kw["iptables_forward_rules"],
        iptables_resync=kw["iptables_resync"],
        renew_margin=margin,
        lease_ttl=ttl,
        healthz_ip=str(kw["healthz_ip"]),
        healthz_port=kw["healthz_port"],
        cleanup_on_exit=kw["cleanup_on_exit"],
        log_level=kw["log_level"].lower(),
        config_poll_interval=kw["config_poll_interval"],
        conflict_check_interval=kw["conflict_check_interval"],
    )
    return opts, ignored
