"""`cluster.yaml` -> a typed, frozen, validated model. Nothing reaches a host before this passes.

Every error is one line naming the field path and, for hosts, the host:
``hosts[1] (node2).address: '192.168.255.300' is not an IPv4 address``.
Warnings (e.g. an even number of etcd members) are returned, never printed.

Inventory keys (relative paths resolve against the inventory file's folder, ``~`` expands).
Format: key (type; default): meaning.

cluster (mapping; required)
  name (RFC 1123 label; required): the cluster's name: etcd's cluster token, derived ids.
  network (IPv4 CIDR; required): the overlay Network (flannel's ``Network``). No host bits set;
      must not contain any host address, ifcfg subnet or name server.
  subnet_len (int; 24, or network prefix + 2 when the Network is longer than /22): the size of
      each host's subnet (``SubnetLen``), network prefix + 2 .. 30.
  subnet_min (IPv4; Network + one subnet): first subnet handed out (``SubnetMin``).
  subnet_max (IPv4; the last subnet): last subnet handed out (``SubnetMax``). Both inside the
      Network and on a subnet_len boundary; there must be a subnet for every ``node`` host.
  backend (str; vxlan): vxlan, host-gw or udp. host-gw needs every node on one L2 segment.
  backend_options (mapping; {}): vxlan: vni (1), port (8472), direct_routing (false);
      udp: port (8285); host-gw: none.
  etcd_prefix (str; /coreos.com/network): etcd key prefix (the seed: /atomic.io/network).
  tls (bool; true): etcd over https with client certificate authentication.
  legacy_client_port (bool; false): etcd also serves clients on port 4001, like the seed.
  os (str; none): rhel or debian, the default for every host.
  ip_masq (bool; false): the agent masquerades traffic leaving the Network (``--ip-masq``).
  agent_options ([str]; []): extra ``--name[=value]`` agent options, placed first in
      FLANNEL_OPTIONS (the seed: --logtostderr=false, --log_dir=/var/log/).
  docker.mode (str; dropin): dropin (a systemd drop-in) or execstart (edit ExecStart, the seed).
ssh (mapping; optional)
  user (str; root): login user.
  port (int; 22): SSH port.
  key (path; none: the SSH agent and default keys): private key file.
  known_hosts (path; ~/.ssh/known_hosts): host keys, checked strictly.
  sudo (bool; false): run remote commands through sudo.
  jump (str; none): a jump host, ``[user@]host[:port]``.
hosts (list; required, not empty), each:
  name (RFC 1123 label; required): hostname and etcd member name.
  address (IPv4; required): underlay address used by SSH, etcd peers and the agent.
  iface (str; none): underlay interface; required with ifcfg. Without it the agent gets
      ``--iface=<address>``.
  roles ([etcd|node]; see below): etcd runs an etcd member, node runs the agent and docker.
  os (str; cluster.os): rhel or debian; ``render`` needs one, the other commands detect it.
  ifcfg (mapping; none): write a static IP file for ``iface`` (ifcfg-<iface> or interfaces.d):
    prefix (int 1..31; required): prefix length of ``address``.
    gateway (IPv4; none): default gateway, inside ``address/prefix``.
    dns ([IPv4]; []): name servers (DNS1, DNS2, ...).
    uuid (UUID; derived with uuid5 from cluster, host and iface): the RHEL connection UUID.

Roles: when no host lists ``roles``, the first three hosts (in file order) get ``[etcd, node]`` and
the rest ``[node]``. As soon as one host lists roles, every host without ``roles`` gets ``[node]``.
``etcd`` runs an etcd member; ``node`` runs the overlay agent and docker with ``--bip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from overlayctl.errors import BadInput
from overlayctl.inventory_checks import check_inventory, check_ssh_files
from overlayctl.inventory_model import (
    BACKENDS,
    DOCKER_MODES,
    OS_FAMILIES,
    ROLES,
    Cluster,
    Host,
    Ifcfg,
    Inventory,
    JumpHost,
    Ssh,
    flannel_defaults,
)
from overlayctl.inventory_parse import parse_top

__all__ = [
    "BACKENDS",
    "DOCKER_MODES",
    "OS_FAMILIES",
    "ROLES",
    "Cluster",
    "Host",
    "Ifcfg",
    "Inventory",
    "JumpHost",
    "Ssh",
    "check_local_files",
    "flannel_defaults",
    "load_inventory",
    "parse_inventory",
    "read_yaml",
]


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                raise BadInput(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r}"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Parsed YAML, or BadInput naming the line (and column) of the problem."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise BadInput(f"{where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"invalid YAML: {' '.join(str(exc).split())}") from None


def load_inventory(path: str | Path) -> tuple[Inventory, list[str]]:
    """Read and validate an inventory file. Returns the model and the warnings (not printed).

    Errors are BadInput, one line, prefixed with the file name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(
            f"{path}: inventory file not found (use -i or OVERLAYCTL_INVENTORY)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the inventory: {exc}") from None
    try:
        data = read_yaml(text)
        return parse_inventory(data, base_dir=path.resolve().parent, source=path)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None


def parse_inventory(
    data: Any, base_dir: Path, source: Path | None = None
) -> tuple[Inventory, list[str]]:
    """Validate already-parsed YAML data. Returns the model and the warnings."""
    inventory = parse_top(data, base_dir, source)
    return inventory, check_inventory(inventory)


def check_local_files(inventory: Inventory) -> list[str]:
    """Check the local files SSH needs (key, known_hosts). BadInput on errors; returns warnings.

    Separate from validation because `render` needs none of them.
    """
    return check_ssh_files(inventory.ssh)
