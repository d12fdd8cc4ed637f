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
      FLANNEL_OPTIONS (the seed: --logtostderr=false, --log_dir=/var/log/). Refused: the
      flags overlayctl sets, and what would leak a secret or widen the agent's reach
      (agent_options.py: --etcd-password, --config-file, a non-loopback --healthz-ip,
      --docker-opts-file outside /run/).
  docker.mode (str; dropin): dropin (a systemd drop-in) or execstart (edit ExecStart, the seed).
  host_firewall (bool; true): where firewalld is not active, iptables rules let etcd's ports
      in only from cluster hosts (peers from members) and keep containers off every member's
      etcd (plan/firewall.py); firewalld, where active, always gets overlayctl's policies.
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

The package is the only door to the inventory: model.py (the frozen model), parse.py (one field
at a time, with fields.py), checks.py (rules across fields and hosts), load.py (the file, and the
state folder beside it), network.py and endpoints.py (values derived from it: the network config
written into etcd, the URLs etcd listens on).
"""

from __future__ import annotations

from overlayctl.inventory.endpoints import etcd_client_urls, etcd_scheme
from overlayctl.inventory.load import (
    check_local_files,
    load_inventory,
    parse_inventory,
    read_yaml,
    state_dir,
)
from overlayctl.inventory.model import (
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
)
from overlayctl.inventory.network import (
    flannel_defaults,
    network_config,
    network_config_json,
    network_config_key,
)

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
    "etcd_client_urls",
    "etcd_scheme",
    "flannel_defaults",
    "load_inventory",
    "network_config",
    "network_config_json",
    "network_config_key",
    "parse_inventory",
    "read_yaml",
    "state_dir",
]
