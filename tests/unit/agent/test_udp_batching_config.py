"""The udp backend's opt-in Batching key in the network config (agent/subnet/config.py)."""

from __future__ import annotations

import pytest

from agent.subnet.config import ConfigError, parse_config


def _udp(backend: str) -> dict:
    return dict(parse_config('{"Network": "10.1.0.0/16", "Backend": ' + backend + "}").backend)


def test_batching_is_off_by_default_and_opt_in_case_insensitively() -> None:
    assert _udp('{"Type": "udp"}') == {"Port": 8285, "Batching": False}
    assert _udp('{"type": "udp", "batching": true}')["Batching"] is True


@pytest.mark.parametrize("value", ['"true"', "1", "null"])
def test_batching_must_be_a_boolean(value: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid Backend\.Batching"):
        _udp('{"Type": "udp", "Batching": ' + value + "}")


def test_the_inventory_can_turn_batching_on_for_every_host() -> None:
    from pathlib import Path

    from agent.subnet.config import parse_config
    from overlayctl.inventory import parse_inventory
    from overlayctl.inventory.network import network_config_json

    doc = {
        "cluster": {"name": "t", "network": "172.21.0.0/16", "backend": "udp",
                    "backend_options": {"batching": True}, "os": "debian"},
        "hosts": [{"name": "a", "address": "10.9.0.1"}],
    }  # fmt: skip
    inv, _ = parse_inventory(doc, Path("/nonexistent"))
    assert network_config_json(inv) == (
        '{"Network":"172.21.0.0/16","Backend":{"Type":"udp","Batching":true}}'
    )
    assert parse_config(network_config_json(inv)).backend["Batching"] is True
