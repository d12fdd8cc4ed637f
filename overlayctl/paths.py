"""Every place on a managed host that overlayctl writes or points at: files, modes, owners, ports.

One module so that render, plan, PKI, reset and status agree on where things live. Everything
here is a plain constant or a tiny pure function; nothing touches a host.
"""

from __future__ import annotations

from typing import NamedTuple

# --- modes and owners ---------------------------------------------------------------------------
MODE_FILE = 0o644  # every rendered configuration file
MODE_KEY = 0o600  # every private key
OWNER_ROOT = "root"
OWNER_ETCD = "etcd"  # the user the distro etcd unit runs as (Debian and RHEL alike)

# --- host basics --------------------------------------------------------------------------------
HOSTNAME = "/etc/hostname"
HOSTS = "/etc/hosts"
SYSCTL = "/etc/sysctl.d/90-overlayctl.conf"
RHEL_IFCFG_DIR = "/etc/sysconfig/network-scripts"
DEBIAN_INTERFACES_DIR = "/etc/network/interfaces.d"

# --- etcd ---------------------------------------------------------------------------------------
ETCD_CONF = "/etc/etcd/etcd.conf"
# Drop-in for the distro unit (Debian's reads /etc/default/etcd, RHEL's /etc/etcd/etcd.conf).
ETCD_DROPIN = "/etc/systemd/system/etcd.service.d/overlayctl.conf"
ETCD_DATA_ROOT = "/var/lib/etcd"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_LEGACY_CLIENT_PORT = 4001  # the seed's extra client port; only with cluster.legacy_client_port

# --- the overlay agent (flanneld-compatible) ----------------------------------------------------
# The env file keeps the seed's keys (FLANNEL_ETCD_ENDPOINTS, FLANNEL_ETCD_PREFIX, FLANNEL_OPTIONS).
AGENT_ENV = {
    "rhel": "/etc/sysconfig/flanneld",
    "debian": "/etc/default/overlay-agent",
}
AGENT_UNIT = "/etc/systemd/system/overlay-agent.service"
AGENT_HOME = "/opt/overlay-agent"  # venv/ and wheelhouse/ live here
AGENT_VENV = f"{AGENT_HOME}/venv"
AGENT_BIN = f"{AGENT_VENV}/bin/overlay-agent"
AGENT_WHEELHOUSE = f"{AGENT_HOME}/wheelhouse"
AGENT_DIGEST = f"{AGENT_HOME}/wheelhouse.sha256"  # fingerprint of what is installed
# The digest the running agent started with (its unit copies AGENT_DIGEST here as it starts):
# differing from AGENT_DIGEST, a run cut between an install and the restart left an older
# process running, and the restart is still owed.
AGENT_STARTED_DIGEST = "/run/flannel/overlay-agent.digest"
AGENT_HEALTHZ_PORT = 8471  # on 127.0.0.1 only: /healthz, /readyz, /metrics
SUBNET_ENV = "/run/flannel/subnet.env"
DOCKER_OPTS_ENV = "/run/flannel/docker"

# --- docker ---------------------------------------------------------------------------------------
# A drop-in, never an edit of the vendor unit: dockerd gets $DOCKER_NETWORK_OPTIONS from the agent.
DOCKER_DROPIN = "/etc/systemd/system/docker.service.d/overlayctl.conf"
DOCKERD = {"debian": "/usr/sbin/dockerd", "rhel": "/usr/bin/dockerd"}

# --- the host firewall ----------------------------------------------------------------------------
# etcd's ports (and, with firewalld, the backend's port) only from the cluster's addresses, and
# containers kept off every member's etcd. Where firewalld is active (RHEL family): two firewalld
# policies (0.9+); elsewhere, with cluster.host_firewall: iptables chains loaded at boot by a
# oneshot unit before etcd, docker and the agent. phases/firewall.py plans both.
FIREWALLD_DIR = "/etc/firewalld"
FIREWALLD_HOST_POLICY = "overlayctl-host"  # ANY -> HOST: our ports only from cluster addresses
FIREWALLD_FORWARD_POLICY = "overlayctl-forward"  # ANY -> ANY: overlay subnet to overlay subnet
FIREWALLD_POLICIES_SINCE = (0, 9)  # firewalld 0.9 (RHEL 8.3+) has policies; CentOS 7 has 0.6
FIREWALLD_LEGACY_PREFIX = "overlayctl"  # older releases' services overlayctl-*, zone overlayctl
FIREWALL_UNIT_NAME = "overlayctl-firewall"
FIREWALL_UNIT = f"/etc/systemd/system/{FIREWALL_UNIT_NAME}.service"
FIREWALL_RULES = "/etc/overlayctl/firewall.rules"  # iptables-restore --noflush input
FIREWALL_INPUT_CHAIN = "OVERLAYCTL-INPUT"  # filter table, jumped to first from INPUT
FIREWALL_FORWARD_CHAIN = "OVERLAYCTL-FORWARD"  # filter table, jumped to first from FORWARD


def firewalld_policy(name: str) -> str:
    """A firewalld policy definition overlayctl writes."""
    return f"{FIREWALLD_DIR}/policies/{name}.xml"


# --- PKI (written by the PKI phase; referenced by etcd.conf and the agent's options) ------------
PKI_DIR = "/etc/overlayctl/pki"
CA_CERT = f"{PKI_DIR}/ca.crt"
ETCD_SERVER_CERT = f"{PKI_DIR}/etcd-server.crt"
ETCD_SERVER_KEY = f"{PKI_DIR}/etcd-server.key"
ETCD_PEER_CERT = f"{PKI_DIR}/etcd-peer.crt"
ETCD_PEER_KEY = f"{PKI_DIR}/etcd-peer.key"
# The host's own client identity (UID = its inventory name, no CN) and its etcd password.
ETCD_CLIENT_CERT = f"{PKI_DIR}/etcd-client.crt"
ETCD_CLIENT_KEY = f"{PKI_DIR}/etcd-client.key"
ETCD_AGENT_PASSWORD = f"{PKI_DIR}/etcd-agent.password"
# The admin identity (CN root): etcd members only, for overlayctl's etcdctl command lines.
ETCD_ADMIN_CERT = f"{PKI_DIR}/etcd-admin.crt"
ETCD_ADMIN_KEY = f"{PKI_DIR}/etcd-admin.key"

# --- etcd identities (users, role, peer name) ---------------------------------------------------
ETCD_ROOT_USER = "root"  # etcd's admin user; the admin certificate's CN
ETCD_PEER_CN = "overlay-etcd-peer"  # every peer certificate's CN; etcd admits no other on 2380
ETCD_HOST_ROLE = "overlay-host"  # every host user's one role
ETCD_BCRYPT_COST = 4  # bcrypt's least: every etcd password is 256 random bits (plan/render.py)
RESERVED_HOST_NAMES = (ETCD_ROOT_USER, ETCD_PEER_CN)  # a host user by that name would be either


class PkiFile(NamedTuple):
    """A PKI file on a host: where, with which mode, owned by whom, and who needs it."""

    path: str
    mode: int
    owner: str
    etcd_only: bool  # only on hosts with the etcd role


# Server and peer keys are read by etcd (User=etcd in the unit), the client key and password by
# the root agent, the admin key by overlayctl's etcdctl (root, over SSH) and an operator's.
PKI_FILES: tuple[PkiFile, ...] = (
    PkiFile(CA_CERT, MODE_FILE, OWNER_ROOT, etcd_only=False),
    PkiFile(ETCD_SERVER_CERT, MODE_FILE, OWNER_ROOT, etcd_only=True),
    PkiFile(ETCD_SERVER_KEY, MODE_KEY, OWNER_ETCD, etcd_only=True),
    PkiFile(ETCD_PEER_CERT, MODE_FILE, OWNER_ROOT, etcd_only=True),
    PkiFile(ETCD_PEER_KEY, MODE_KEY, OWNER_ETCD, etcd_only=True),
    PkiFile(ETCD_CLIENT_CERT, MODE_FILE, OWNER_ROOT, etcd_only=False),
    PkiFile(ETCD_CLIENT_KEY, MODE_KEY, OWNER_ROOT, etcd_only=False),
    PkiFile(ETCD_AGENT_PASSWORD, MODE_KEY, OWNER_ROOT, etcd_only=False),
    PkiFile(ETCD_ADMIN_CERT, MODE_KEY, OWNER_ROOT, etcd_only=True),
    PkiFile(ETCD_ADMIN_KEY, MODE_KEY, OWNER_ROOT, etcd_only=True),
)
ADMIN_FILES = (ETCD_ADMIN_CERT, ETCD_ADMIN_KEY)  # removed from any host that is no member


def rhel_ifcfg(iface: str) -> str:
    """The RHEL-family static IP file for `iface`."""
    return f"{RHEL_IFCFG_DIR}/ifcfg-{iface}"


def debian_interfaces(iface: str) -> str:
    """The Debian-family ifupdown stanza file for `iface`."""
    return f"{DEBIAN_INTERFACES_DIR}/{iface}"


def etcd_data_dir(member: str) -> str:
    """etcd's data directory for a member, named like the seed's (/var/lib/etcd/node1.etcd)."""
    return f"{ETCD_DATA_ROOT}/{member}.etcd"
