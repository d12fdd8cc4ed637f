"""overlay-agent's options: flanneld's flag names, ``FLANNELD_*`` env, an optional config file.

Precedence (highest first): command line, ``FLANNELD_<NAME>`` env (``FLANNEL_ETCD_ENDPOINTS``
and ``FLANNEL_ETCD_PREFIX`` of the seed's /etc/sysconfig/flanneld as fallbacks), the
``--config-file`` (KEY=VALUE lines or a YAML/JSON mapping of the same names), the defaults.
Go-style spellings flanneld accepts are accepted too: ``-iface=eth0`` and ``--ip-masq=true``.

No Click: importing it and building the command cost every agent ~0.03 CPU-s at start. The
words are read here as Click read them, with its messages; argparse lays out --help.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent import __version__
from agent.files import DEFAULT_DOCKER_FILE, DEFAULT_SUBNET_FILE, parse_env
from agent.logs import LEVELS
from agent.options.values import (
    BOOL_STATES,
    IntRange,
    UsageError,
    boolean,
    choice,
    duration,
    endpoints,
    existing_file,
    ip_address,
    regexes,
    split_commas,
)

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"
_DESCRIPTION = (
    "Lease a subnet in etcd, program the overlay data plane, write /run/flannel/subnet.env."
)
_ENV_HELP = "Every option can also be set as FLANNELD_<NAME> (e.g. FLANNELD_ETCD_ENDPOINTS)."


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
    allowlist_check_interval: float = 60.0

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


def _read_config(value: Any) -> dict[str, Any]:
    """The --config-file's options by name; its keys are flag or env names (``ip-masq``,
    ``FLANNELD_IP_MASQ``)."""
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror}") from exc
    import yaml  # noqa: PLC0415 - only for --config-file: 2 MB less RSS for every agent

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        data = parse_env(text)
        if not data and text.strip():
            raise ValueError(f"{value}: expected KEY=VALUE lines or a YAML/JSON mapping")
    config: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).strip().lstrip("-").lower().replace("-", "_")
        name = name.removeprefix("flanneld_").removeprefix("flannel_")
        if name not in _SETTINGS:
            raise ValueError(f"{value}: unknown option {key!r}")
        config[name] = raw
    return config


@dataclass(frozen=True)
class _Option:
    """One option. ``flags``: its spellings, ``/``-separated (``--no-<name>`` turns a flag
    off); its name (``FLANNELD_<NAME>``, config key) is the first long flag's. --help shows
    the default of those taking a value, unless None or empty."""

    flags: str
    convert: Callable[[Any], Any] = str
    default: Any = None
    help: str | None = None  # None: not in --help
    metavar: str = "TEXT"
    env: tuple[str, ...] = ()  # looked at before FLANNELD_<NAME>
    multiple: bool = False  # repeatable
    eager: bool = False  # --help, --version, --config-file: acted on first, as given

    @property
    def flag(self) -> bool:
        """Takes no value: ``--x`` is true, ``--no-x`` false."""
        return self.convert is boolean

    @property
    def names(self) -> list[str]:
        return self.flags.split("/")

    @property
    def name(self) -> str:
        return next(f for f in self.names if f.startswith("--"))[2:].replace("-", "_")

    @property
    def hint(self) -> str:
        return " / ".join(repr(f) for f in self.names if not f.startswith("--no-"))


# fmt: off
_OPTIONS = (
    _Option("--version", boolean, eager=True, help="Show the version and exit."),
    _Option("--config-file", _read_config, eager=True,
            help="KEY=VALUE or YAML/JSON file with these options (names as the flags)."),
    _Option("--etcd-endpoints", endpoints, DEFAULT_ENDPOINTS, "Comma-separated etcd client URLs.",
            env=("FLANNELD_ETCD_ENDPOINTS", "FLANNEL_ETCD_ENDPOINTS")),
    _Option("--etcd-prefix", str, DEFAULT_PREFIX, "etcd prefix holding config and subnets/.",
            env=("FLANNELD_ETCD_PREFIX", "FLANNEL_ETCD_PREFIX")),
    _Option("--etcd-cafile", existing_file, None, "etcd CA file.", "FILE"),
    _Option("--etcd-certfile", existing_file, None, "Client cert.", "FILE"),
    _Option("--etcd-keyfile", existing_file, None, "Client key.", "FILE"),
    _Option("--etcd-username", str, None, "etcd user (with a password)."),
    _Option("--etcd-password", str, None, "etcd password (better: env or --etcd-password-file)."),
    _Option("--etcd-password-file", existing_file, None, "File holding the etcd password.", "FILE"),
    _Option("--etcd-transport", choice("http", "grpc"), "http",
            "etcd's JSON gateway (standard library) or gRPC (the pyetcd library).", "[http|grpc]",
            env=("OVERLAY_AGENT_ETCD_TRANSPORT",)),
    _Option("--iface", split_commas, [], "Interface name or IP (repeatable).", multiple=True),
    _Option("--iface-regex", regexes, [], "Interface regex (repeat).", multiple=True),
    _Option("--public-ip", partial(ip_address, v6=False), None,
            "IP peers use to reach this host.", "IP"),
    _Option("--subnet-file", str, str(DEFAULT_SUBNET_FILE), "subnet.env path."),
    _Option("--docker-opts-file", str, str(DEFAULT_DOCKER_FILE), "DOCKER_NETWORK_OPTIONS file."),
    _Option("--ip-masq/--no-ip-masq", boolean, False, "Masquerade traffic leaving Network."),
    _Option("--iptables-forward-rules/--no-iptables-forward-rules", boolean, True,
            "Accept the Network in FORWARD (chain FLANNEL-FWD).  [default: on]"),
    _Option("--iptables-resync", duration, "5s", "How often to re-check the iptables rules.",
            "DURATION"),
    _Option("--subnet-lease-renew-margin", IntRange(0), 60,
            "Minutes before expiry to renew the lease.", "INTEGER"),
    _Option("--subnet-lease-ttl", duration, "24h", "Lease TTL.", "DURATION"),
    _Option("--healthz-ip", ip_address, "127.0.0.1",
            "Address of the HTTP server (flannel: 0.0.0.0).", "IP"),
    _Option("--healthz-port", IntRange(0, 65535), 0,
            "Port of /healthz, /readyz, /metrics (0 = off).", "INTEGER"),
    _Option("--cleanup-on-exit/--no-cleanup-on-exit", boolean, False,
            "On exit remove the data plane and revoke the lease (default: keep both)."),
    _Option("--log-level", choice(*LEVELS, any_case=True), "info",
            "Log threshold (logs: key=value lines on stderr).", f"[{'|'.join(LEVELS)}]"),
    _Option("--config-poll-interval", duration, "10s",
            "How often to re-read a missing or invalid <prefix>/config.", "DURATION"),
    _Option("--conflict-check-interval", duration, "5m",
            "How often to look for duplicate subnets and PublicIPs among all leases.", "DURATION"),
    _Option("--allowlist-check-interval", duration, "60s",
            "How often to re-read <prefix>/allowed-public-ips between subnet events.",
            "DURATION"),
    _Option("--logtostderr/--no-logtostderr", boolean),  # flanneld's: accepted, reported ignored
    _Option("--log_dir/--log-dir"),
    _Option("-h/--help", boolean, eager=True, help="Show this message and exit."),
)
# fmt: on
_BY_NAME = {opt.name: opt for opt in _OPTIONS}
_SETTINGS = {name: opt for name, opt in _BY_NAME.items() if not opt.eager}  # config file keys
_FLAGS = {flag: opt for opt in _OPTIONS for flag in opt.names}
BOOL_FLAGS = tuple(flag[5:] for flag in _FLAGS if flag.startswith("--no-"))


def normalize_argv(args: Sequence[str]) -> list[str]:
    """Go flag spellings to the parser's: ``-iface=x`` -> ``--iface=x``, ``--ip-masq=false`` ->
    ``--no-ip-masq``. Everything after ``--`` is left alone."""
    out: list[str] = []
    for i, given in enumerate(args):
        if given == "--":
            return out + list(args[i:])
        arg = "-" + given if re.match(r"^-[a-z][a-z0-9_-]+", given) else given
        name, eq, value = arg[2:].partition("=")
        state = BOOL_STATES.get(value.strip().lower())
        if arg.startswith("--") and eq and name in BOOL_FLAGS and state is not None:
            arg = f"--{name}" if state else f"--no-{name}"
        out.append(arg)
    return out


def _read_args(args: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The options given, by name in the order first given (a repeatable one's: the list),
    and the other words. Read as Click read them: an option's value is the next word,
    whatever it looks like; ``--`` ends the options."""
    given: dict[str, Any] = {}
    extra: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            extra += words
            break
        if len(word) < 2 or not word.startswith("-"):
            extra.append(word)
            continue
        flag, eq, value = word.partition("=")
        opt = _FLAGS.get(flag)
        if opt is None:
            raise _no_such_option(flag)
        if opt.flag and eq:
            raise UsageError(f"Option {flag!r} does not take a value.")
        if opt.flag:
            value = not flag.startswith("--no-")
        elif not eq:
            value = next(words, None)
            if value is None:
                raise UsageError(f"Option {flag!r} requires an argument.")
        given[opt.name] = [*given.get(opt.name, []), value] if opt.multiple else value
    return given, extra


def _no_such_option(flag: str) -> UsageError:
    message = f"No such option {flag!r}."
    if flag.startswith("--"):
        from difflib import get_close_matches  # noqa: PLC0415 - only for this error

        close = sorted(get_close_matches(flag, [f for f in _FLAGS if f.startswith("--")]))
        if len(close) == 1:
            message += f" Did you mean {close[0]!r}?"
        elif close:
            message += f" (Did you mean one of: {', '.join(map(repr, close))}?)"
    return UsageError(message)


def _resolve(opt: _Option, given: dict[str, Any], config: dict[str, Any]) -> Any:
    """The option's value, converted: from the command line, else the env, else the config
    file, else its default. Empty env variables and empty config keys count as unset."""
    envs = (*opt.env, f"FLANNELD_{opt.name.upper()}")
    env = next((os.environ[name] for name in envs if os.environ.get(name)), None)
    if opt.name in given:
        value = given[opt.name]
    elif env is not None:
        value = env.split() if opt.multiple else env
    elif config.get(opt.name) is not None:
        value = config[opt.name]
        value = [value] if opt.multiple and not isinstance(value, list) else value
    else:
        value = opt.default
    try:
        return None if value is None else opt.convert(value)
    except ValueError as exc:
        raise _invalid(opt.hint, str(exc)) from exc


def _help(prog: str) -> str:
    """The text of --help, laid out by argparse (imported for --help only)."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [OPTIONS]",
        description=_DESCRIPTION,
        epilog=_ENV_HELP,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34, width=78),
        add_help=False,
    )
    group = parser.add_argument_group("Options")
    for opt in _OPTIONS:
        if opt.help is None:  # --logtostderr, --log_dir
            continue
        text = opt.help
        if opt.default not in (None, []) and not opt.flag:
            bounds = f"; {opt.convert}" if isinstance(opt.convert, IntRange) else ""
            text += f"  [default: {opt.default}{bounds}]"
        how = {"action": "store_true"} if opt.flag else {"metavar": opt.metavar}
        group.add_argument(*opt.names, help=text, **how)
    return parser.format_help().rstrip("\n")


def parse(args: Sequence[str], prog: str) -> tuple[AgentOptions, list[str]] | str:
    """The options and the ignored flanneld flags given (``--logtostderr``, ``--log_dir``),
    or the text --help or --version asks for. `args` come through :func:`normalize_argv`.

    A bad option, env value or config file raises :class:`UsageError`; when there are several,
    the one Click reported: the command line's words, then --help, --version and
    --config-file as given (then FLANNELD_CONFIG_FILE), the values (those given first, as
    given), the extra words, the checks across options.
    """
    given, extra = _read_args(args)
    config: dict[str, Any] = {}
    eager = [name for name in given if _BY_NAME[name].eager]
    for name in eager if "config_file" in eager else [*eager, "config_file"]:
        if name == "help":
            return _help(prog)
        if name == "version":
            return f"{prog}, version {__version__}"
        config = _resolve(_BY_NAME[name], given, {}) or {}
    rank = {name: i for i, name in enumerate(given)}
    order = sorted(_SETTINGS.values(), key=lambda opt: rank.get(opt.name, len(rank)))
    values = {opt.name: _resolve(opt, given, config) for opt in order}
    if extra:
        s = "s" if len(extra) > 1 else ""
        raise UsageError(f"Got unexpected extra argument{s} ({' '.join(extra)})")
    ignored = [f"--{name}" for name in ("logtostderr", "log_dir") if values[name] is not None]
    return _agent_options(values), ignored


def _agent_options(kw: dict[str, Any]) -> AgentOptions:
    """The options, after the checks across them."""
    password = kw["etcd_password"]
    if kw["etcd_password_file"]:
        password = Path(kw["etcd_password_file"]).read_text(encoding="utf-8").strip()
    ttl = int(kw["subnet_lease_ttl"])
    margin = kw["subnet_lease_renew_margin"] * 60.0
    prefix = str(kw["etcd_prefix"]).strip()
    if bool(kw["etcd_username"]) != bool(password):
        raise _invalid("--etcd-username", "--etcd-username and a password must be given together")
    if bool(kw["etcd_certfile"]) != bool(kw["etcd_keyfile"]):
        raise _invalid(
            "--etcd-certfile", "--etcd-certfile and --etcd-keyfile must be given together"
        )
    if margin >= ttl:
        minutes = kw["subnet_lease_renew_margin"]
        raise _invalid(
            "--subnet-lease-renew-margin", f"{minutes} minutes is not below the lease TTL ({ttl}s)"
        )
    if not prefix.startswith("/"):
        raise _invalid("--etcd-prefix", f"{prefix!r} must start with /")
    fixed = {
        "etcd_prefix": prefix.rstrip("/") or "/",
        "etcd_password": password,
        "ifaces": kw["iface"],
        "iface_regexes": kw["iface_regex"],
        "renew_margin": margin,
        "lease_ttl": ttl,
        "subnet_file": Path(kw["subnet_file"]),
        "docker_opts_file": Path(kw["docker_opts_file"]),
        "healthz_ip": str(kw["healthz_ip"]),
    }
    same = {f.name: kw[f.name] for f in fields(AgentOptions) if f.name in kw}  # e.g. ip_masq
    return AgentOptions(**{**same, **fixed})


def _invalid(flag: str, message: str) -> UsageError:
    return UsageError(f"Invalid value for {flag}: {message}")
