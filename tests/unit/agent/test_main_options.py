"""overlay-agent's options: flags, FLANNELD_* env, the config file, bad values."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.main import main, parse_args
from agent.options import AgentOptions, normalize_argv
from agent.options.values import parse_duration

WORD = "s3cret"
ENV_NAMES = (
    "FLANNELD_ETCD_ENDPOINTS",
    "FLANNEL_ETCD_ENDPOINTS",
    "FLANNELD_ETCD_PREFIX",
    "FLANNEL_ETCD_PREFIX",
    "FLANNELD_IFACE",
    "FLANNELD_IP_MASQ",
    "FLANNELD_HEALTHZ_PORT",
    "FLANNELD_ETCD_PASSWORD",
    "FLANNELD_ETCD_USERNAME",
    "FLANNELD_CONFIG_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def opts(*argv: str) -> AgentOptions:
    result = parse_args(list(argv))
    assert not isinstance(result, int), f"exit {result}"
    return result[0]


def test_defaults_are_flannels() -> None:
    o = opts()
    assert o.etcd_endpoints == ("http://127.0.0.1:2379",)
    assert o.etcd_prefix == "/coreos.com/network"
    assert o.subnet_file == Path("/run/flannel/subnet.env")
    assert o.docker_opts_file == Path("/run/flannel/docker")
    assert o.renew_margin == 3600 and o.lease_ttl == 86400
    assert (o.healthz_ip, o.healthz_port) == ("127.0.0.1", 0)
    assert not o.ip_masq and not o.cleanup_on_exit


def test_flags_in_go_and_click_spellings() -> None:
    o = opts(
        "-etcd-endpoints=https://10.0.0.11:2379,https://10.0.0.12:2379",
        "--etcd-prefix",
        "/atomic.io/network",
        "--iface=eth0,10.0.0.5",
        "--iface",
        "eth1",
        "--iface-regex=^en",
        "--public-ip=10.0.0.5",
        "--ip-masq=true",
        "--cleanup-on-exit",
        "--subnet-lease-renew-margin=30",
        "--subnet-lease-ttl=2h",
        "--healthz-port=9101",
    )
    assert o.etcd_endpoints == ("https://10.0.0.11:2379", "https://10.0.0.12:2379")
    assert o.etcd_prefix == "/atomic.io/network"
    assert o.ifaces == ("eth0", "10.0.0.5", "eth1")
    assert o.iface_regexes == ("^en",)
    assert o.public_ip == IPv4Address("10.0.0.5")
    assert o.ip_masq and o.cleanup_on_exit
    assert (o.renew_margin, o.lease_ttl, o.healthz_port) == (1800, 7200, 9101)


def test_seed_log_flags_are_accepted_and_reported() -> None:
    result = parse_args(["--logtostderr=false", "--log_dir=/var/log/", "--ip-masq"])
    assert not isinstance(result, int)
    options, ignored = result
    assert ignored == ["--logtostderr", "--log_dir"] and options.ip_masq


def test_normalize_argv() -> None:
    assert normalize_argv(["-iface=eth0", "--ip-masq=false", "-h", "--", "-x=1"]) == [
        "--iface=eth0",
        "--no-ip-masq",
        "-h",
        "--",
        "-x=1",
    ]


def test_env_flanneld_names_and_seed_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLANNEL_ETCD_ENDPOINTS", "http://10.1.1.1:2379")
    monkeypatch.setenv("FLANNEL_ETCD_PREFIX", "/atomic.io/network")
    monkeypatch.setenv("FLANNELD_IFACE", "eth0 eth1")
    monkeypatch.setenv("FLANNELD_IP_MASQ", "true")
    monkeypatch.setenv("FLANNELD_ETCD_USERNAME", "flannel")
    monkeypatch.setenv("FLANNELD_ETCD_PASSWORD", WORD)
    o = opts()
    assert o.etcd_endpoints == ("http://10.1.1.1:2379",)
    assert o.etcd_prefix == "/atomic.io/network"
    assert o.ifaces == ("eth0", "eth1") and o.ip_masq
    assert o.etcd_password == WORD
    assert WORD not in repr(o) and WORD not in str(o.describe())
    monkeypatch.setenv("FLANNELD_ETCD_ENDPOINTS", "http://10.2.2.2:2379")
    assert opts().etcd_endpoints == ("http://10.2.2.2:2379",)  # FLANNELD_ wins
    assert opts("--etcd-endpoints=http://10.3.3.3:2379").etcd_endpoints == ("http://10.3.3.3:2379",)


@pytest.mark.parametrize(
    "text",
    [
        "etcd-endpoints: http://10.4.4.4:2379\niface: [eth0, eth1]\nip-masq: true\n"
        "healthz-port: 9102\n",
        '{"etcd_endpoints": "http://10.4.4.4:2379", "iface": "eth0,eth1", "ip_masq": true,'
        ' "healthz_port": 9102}',
        "# sysconfig style\nFLANNELD_ETCD_ENDPOINTS=http://10.4.4.4:2379\n"
        'FLANNELD_IFACE="eth0,eth1"\nFLANNELD_IP_MASQ=true\nFLANNELD_HEALTHZ_PORT=9102\n',
    ],
    ids=["yaml", "json", "env"],
)
def test_config_file_formats(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.conf"
    path.write_text(text)
    o = opts(f"--config-file={path}")
    assert o.etcd_endpoints == ("http://10.4.4.4:2379",)
    assert o.ifaces == ("eth0", "eth1") and o.ip_masq and o.healthz_port == 9102
    # Flags and env beat the file.
    assert opts(f"--config-file={path}", "--no-ip-masq").ip_masq is False


def test_config_file_below_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("healthz-port: 9103\n")
    monkeypatch.setenv("FLANNELD_CONFIG_FILE", str(path))
    assert opts().healthz_port == 9103  # the file itself named in the env
    monkeypatch.setenv("FLANNELD_HEALTHZ_PORT", "9104")
    assert opts(f"--config-file={path}").healthz_port == 9104


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--healthz-port=70000"], "--healthz-port"),
        (["--healthz-port=http"], "--healthz-port"),
        (["--etcd-endpoints=ftp://x"], "--etcd-endpoints"),
        (["--public-ip=10.0.0.300"], "--public-ip"),
        (["--public-ip=fe80::1"], "--public-ip"),
        (["--subnet-lease-ttl=soon"], "--subnet-lease-ttl"),
        (
            ["--subnet-lease-ttl=1h", "--subnet-lease-renew-margin=60"],
            "--subnet-lease-renew-margin",
        ),
        (["--iface-regex=("], "--iface-regex"),
        (["--etcd-cafile=/nonexistent/ca.crt"], "--etcd-cafile"),
        (["--etcd-username=u"], "--etcd-username"),
        (["--etcd-prefix=relative"], "--etcd-prefix"),
        (["--log-level=loud"], "--log-level"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_values_one_line_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and err.startswith("overlay-agent: error:")
    assert "Traceback" not in err


def test_unknown_key_in_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ifcae: eth0\n")
    with pytest.raises(SystemExit) as exc:
        main([f"--config-file={path}"])
    assert exc.value.code == 2 and "ifcae" in capsys.readouterr().err


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(WORD + "\n")
    o = opts("--etcd-username=flannel", f"--etcd-password-file={secret}")
    assert o.etcd_password == WORD


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "--version"):
        with pytest.raises(SystemExit) as exc:
            main([flag])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--etcd-endpoints" in out and "FLANNELD_" in out


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("1h30m", 5400), ("90s", 90), ("500ms", 0.5), ("120", 120)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1d", "1h 2m", "-"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
