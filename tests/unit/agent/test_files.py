"""subnet.env and the docker options file: exact formats, atomic writes, reading back."""

from __future__ import annotations

import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from agent.files import (
    SubnetEnv,
    format_docker_opts,
    format_subnet_env,
    read_previous_subnet,
    read_subnet_env,
    write_atomic,
    write_docker_opts,
    write_subnet_env,
)

ENV = SubnetEnv(IPv4Network("172.21.0.0/16"), IPv4Network("172.21.31.0/24"), 1472, False)


def test_subnet_env_exact_format() -> None:
    assert format_subnet_env(ENV) == (
        "FLANNEL_NETWORK=172.21.0.0/16\n"
        "FLANNEL_SUBNET=172.21.31.1/24\n"
        "FLANNEL_MTU=1472\n"
        "FLANNEL_IPMASQ=false\n"
    )


def test_docker_opts_without_agent_masquerade() -> None:
    assert format_docker_opts(ENV) == (
        'DOCKER_OPT_BIP="--bip=172.21.31.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
        'DOCKER_OPT_MTU="--mtu=1472"\n'
        'DOCKER_NETWORK_OPTIONS=" --bip=172.21.31.1/24 --ip-masq=true --mtu=1472"\n'
    )


def test_docker_opts_with_agent_masquerade() -> None:
    env = SubnetEnv(IPv4Network("10.1.0.0/16"), IPv4Network("10.1.7.0/24"), 1450, True)
    text = format_docker_opts(env)
    assert 'DOCKER_OPT_IPMASQ="--ip-masq=false"' in text
    assert 'DOCKER_NETWORK_OPTIONS=" --bip=10.1.7.1/24 --ip-masq=false --mtu=1450"' in text


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    write_subnet_env(ENV, path)
    assert read_subnet_env(path) == ENV
    assert read_previous_subnet(path) == IPv4Network("172.21.31.0/24")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    docker = tmp_path / "run" / "flannel" / "docker"
    write_docker_opts(ENV, docker)
    assert docker.read_text().startswith('DOCKER_OPT_BIP="--bip=172.21.31.1/24"\n')


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("old\n")
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["subnet.env"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["subnet.env"]


@pytest.mark.parametrize(
    "content",
    [None, "", "garbage\n", "FLANNEL_NETWORK=10.1.0.0/16\n", "FLANNEL_SUBNET=x/24\n"],
)
def test_previous_subnet_missing_or_bad(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "subnet.env"
    if content is not None:
        path.write_text(content)
    assert read_previous_subnet(path) is None


def test_reads_a_flannel_written_file(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.42.1/24\nFLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )
    env = read_subnet_env(path)
    assert env is not None
    assert (env.subnet, env.mtu, env.ipmasq) == (IPv4Network("10.1.42.0/24"), 1450, True)
