"""The files of the seed runbook's hand-built cluster, as text (pure; tests/e2e/handbuilt.py
puts them on the hosts). Each is the runbook's own (or the CentOS 7 RPM's it installs), with
the lab's addresses and interface in place of 192.168.255.154/155 and ens33, and the runbook's
slips kept: adopt must survive them (docs/design/adopt.md 1.3)."""

from __future__ import annotations

NETWORK = "172.21.0.0/16"  # the runbook's `etcdctl mk .../config '{"Network":"172.21.0.0/16"}'`
# The runbook's FLANNEL_ETCD_PREFIX. The lab's inventory says nothing, so it means overlayctl's
# default /coreos.com/network: handbuilt.inventory() writes this one.
PREFIX = "/atomic.io/network"
ETCD_CONF = "/etc/etcd/etcd.conf"
ETCD_OVERRIDE = "/etc/systemd/system/etcd.service.d/override.conf"
# What `systemctl edit etcd` would leave: the empty line resets Debian's `/etc/default/%p`.
ETCD_OVERRIDE_TEXT = "[Service]\nEnvironmentFile=\nEnvironmentFile=/etc/etcd/etcd.conf\n"

FLANNELD = "/usr/bin/flanneld"  # tests/e2e/fake_flanneld.py
FLANNELD_START = "/usr/bin/flanneld-start"
MK_DOCKER_OPTS = "/usr/libexec/flannel/mk-docker-opts.sh"
SYSCONFIG = "/etc/sysconfig/flanneld"
RPM_UNIT = "/usr/lib/systemd/system/flanneld.service"
HAND_UNIT = "/etc/systemd/system/flanneld.service"  # a hand-written one wins over the RPM's
RPM_DOCKER_DROPIN = "/usr/lib/systemd/system/docker.service.d/flannel.conf"
DOCKER_OVERRIDE = "/etc/systemd/system/docker.service.d/override.conf"
DOCKERD = "/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"


def etcd_conf(addresses: dict[str, str], name: str) -> str:
    """The runbook's /etc/etcd/etcd.conf (5.5.6) for member NAME, the lab's ADDRESSES (name ->
    address, in member order) in place of 192.168.255.154/155. The first member advertises the
    SECOND's address on 4001 as a client URL, the runbook's slip; ETCD_ENABLE_V2 is uncommented
    (etcd 3.4 serves no v2 without it, and the runbook's flanneld speaks only v2)."""
    names = list(addresses)
    own = addresses[name]
    clients = f"http://{own}:2379,http://{addresses[names[1]] if name == names[0] else own}:4001"
    cluster = ",".join(f"{n}=http://{a}:2380" for n, a in addresses.items())
    return f"""#[Member]
#ETCD_CORS=""
ETCD_DATA_DIR="/var/lib/etcd/{name}.etcd"
#ETCD_WAL_DIR=""
ETCD_LISTEN_PEER_URLS="http://0.0.0.0:2380"
ETCD_LISTEN_CLIENT_URLS="http://0.0.0.0:2379,http://0.0.0.0:4001"
#ETCD_MAX_SNAPSHOTS="5"
#ETCD_MAX_WALS="5"
ETCD_NAME="{name}"
#ETCD_SNAPSHOT_COUNT="100000"
#ETCD_HEARTBEAT_INTERVAL="100"
#ETCD_ELECTION_TIMEOUT="1000"
#ETCD_QUOTA_BACKEND_BYTES="0"
#ETCD_MAX_REQUEST_BYTES="1572864"
#ETCD_GRPC_KEEPALIVE_MIN_TIME="5s"
#ETCD_GRPC_KEEPALIVE_INTERVAL="2h0m0s"
#ETCD_GRPC_KEEPALIVE_TIMEOUT="20s"
#
#[Clustering]
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://{own}:2380"
ETCD_ADVERTISE_CLIENT_URLS="{clients}"
#ETCD_DISCOVERY=""
#ETCD_DISCOVERY_FALLBACK="proxy"
#ETCD_DISCOVERY_PROXY=""
#ETCD_DISCOVERY_SRV=""
ETCD_INITIAL_CLUSTER="{cluster}"
#ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster"
#ETCD_INITIAL_CLUSTER_STATE="new"
#ETCD_STRICT_RECONFIG_CHECK="true"
ETCD_ENABLE_V2="true"
#
#[Proxy]

"""


def sysconfig(addresses: dict[str, str], prefix: str, iface: str, slip: bool) -> str:
    """The runbook's /etc/sysconfig/flanneld (5.6.2); SLIP: node1's `--etcd endpoints=`."""
    endpoints = ",".join(f"http://{a}:2379" for a in addresses.values())
    flag = "--etcd endpoints=" if slip else "--etcd-endpoints="
    return f"""# Flanneld configuration options

# etcd url location.  Point this to the server where etcd runs
FLANNEL_ETCD_ENDPOINTS="{endpoints}"

# etcd config key.  This is the configuration key that flannel queries
# For address range assignment
FLANNEL_ETCD_PREFIX="{prefix}"

# Any additional options that you want to pass
#FLANNEL_OPTIONS=""
FLANNEL_OPTIONS="--logtostderr=false --log_dir=/var/log/ {flag}{endpoints} --iface={iface}"
"""


# flannel-0.7.1-4.el7's unit (WantedBy=docker.service: stopping flanneld leaves docker alone).
RPM_UNIT_TEXT = f"""[Unit]
Description=Flanneld overlay address etcd agent
After=network.target
After=network-online.target
Wants=network-online.target
After=etcd.service
Before=docker.service

[Service]
Type=notify
EnvironmentFile={SYSCONFIG}
EnvironmentFile=-/etc/sysconfig/docker-network
ExecStart={FLANNELD_START} $FLANNEL_OPTIONS
ExecStartPost={MK_DOCKER_OPTS} -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker
Restart=on-failure

[Install]
WantedBy=multi-user.target
WantedBy=docker.service
"""

# The hand-written kind many guides show: RequiredBy=docker.service, so that once enabled,
# docker Requires= flanneld and stopping flanneld stops docker (adopt's risk 2).
HAND_UNIT_TEXT = f"""[Unit]
Description=flanneld, written by hand
After=network.target network-online.target etcd.service
Wants=network-online.target
Before=docker.service

[Service]
Type=notify
EnvironmentFile={SYSCONFIG}
ExecStart={FLANNELD} -etcd-endpoints=${{FLANNEL_ETCD_ENDPOINTS}} \\
    -etcd-prefix=${{FLANNEL_ETCD_PREFIX}} $FLANNEL_OPTIONS
ExecStartPost={MK_DOCKER_OPTS} -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker
Restart=on-failure

[Install]
WantedBy=multi-user.target
RequiredBy=docker.service
"""

FLANNELD_START_TEXT = f"""#!/bin/sh

exec {FLANNELD} \\
        -etcd-endpoints=${{FLANNEL_ETCD_ENDPOINTS}} \\
        -etcd-prefix=${{FLANNEL_ETCD_PREFIX}} \\
        "$@"
"""

# The RPM's drop-in for docker: harmless here (no ExecStart uses $DOCKER_NETWORK_OPTIONS).
RPM_DOCKER_DROPIN_TEXT = "[Service]\nEnvironmentFile=-/run/flannel/docker\n"

# flannel's mk-docker-opts.sh, reduced to what the units use (-k KEY -d FILE, -f ENV): the same
# four lines (--ip-masq is the inverse of FLANNEL_IPMASQ), byte for byte.
MK_DOCKER_OPTS_TEXT = r"""#!/bin/sh
# Test stand-in for flannel's mk-docker-opts.sh (only -k, -d and -f).
key=DOCKER_OPTS out=/run/docker_opts.env env=/run/flannel/subnet.env
while getopts "k:d:f:cim" opt; do
    case $opt in k) key=$OPTARG ;; d) out=$OPTARG ;; f) env=$OPTARG ;; *) ;; esac
done
. "$env"
masq=true
[ "$FLANNEL_IPMASQ" = true ] && masq=false
bip="--bip=$FLANNEL_SUBNET" ipmasq="--ip-masq=$masq" mtu="--mtu=$FLANNEL_MTU"
mkdir -p "$(dirname "$out")"
printf 'DOCKER_OPT_BIP="%s"\nDOCKER_OPT_IPMASQ="%s"\nDOCKER_OPT_MTU="%s"\n%s=" %s %s %s"\n' \
    "$bip" "$ipmasq" "$mtu" "$key" "$bip" "$ipmasq" "$mtu" > "$out"
"""


def docker_flags(subnet_env: str) -> str:
    """What the runbook's operator types after dockerd (5.7), read off subnet.env."""
    env = dict(line.split("=", 1) for line in subnet_env.split() if "=" in line)
    masq = "false" if env.get("FLANNEL_IPMASQ") == "true" else "true"
    return f"--bip={env['FLANNEL_SUBNET']} --ip-masq={masq} --mtu={env['FLANNEL_MTU']}"


def docker_override(flags: str) -> str:
    """A hand-made /etc/systemd/system/docker.service.d/override.conf (`systemctl edit`)."""
    return f"[Service]\nExecStart=\nExecStart={DOCKERD} {flags}\n"
