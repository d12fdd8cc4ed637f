# What a host is like before we change it, in one round trip (parsed by overlayctl/plan/facts.py).
# $1 the agent's digest file, $2 overlayctl's docker drop-in, $3 the digest the running agent
# started with, $4 the overlay Network (for the routes into it); then the package names to look up
# (Debian and RHEL names alike; unknown names are just absent; on RHEL a name counts when an
# installed package provides it, e.g. iptables by iptables-nft on EL9). firewalld, when active: the
# version, the default zone, the runtime zone of each interface and the permanent services of
# each zone.
digest_file=$1; dropin=$2; started_file=$3; network=$4; shift 4
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"
echo "os_like=${ID_LIKE:-}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "hostname=$(hostname)"
# `python3 -V` (Python 3.11.2 -> 3.11): an interpreter's start-up without its site, six times
# cheaper than asking sys.version_info
python=
if command -v python3 >/dev/null 2>&1; then
  python=$(python3 -V 2>&1)
  python=${python#Python }
  python=${python%.*}
fi
echo "python=$python"
for m in apt-get dnf yum; do
  if command -v "$m" >/dev/null 2>&1; then echo "pkg_manager=$m"; break; fi
done
echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
[ -d /run/systemd/system ] && echo "systemd=yes"
# Each unit's `is-active` and `is-enabled` (its ActiveState and UnitFileState), all from one
# systemctl: a process per unit and question cost more than the rest of this script at 25 hosts.
units="etcd overlay-agent docker firewalld overlayctl-firewall flanneld"
# shellcheck disable=SC2046 # one word per unit
# (and docker's unit file, for docker.mode below; for a cluster built by hand, what
# overlayctl/plan/handbuilt.py reads: flanneld's unit and what pulls it in, docker's effective
# unit and etcd's drop-ins, as `unitprop=UNIT KEY=VALUE`)
unit_states=$(systemctl show -p ActiveState -p UnitFileState -p FragmentPath \
    -p DropInPaths -p ExecStart -p EnvironmentFiles -p Requires -p BindsTo -p PartOf \
    -p RequiredBy -p WantedBy -p MainPID \
    $(for u in $units; do echo "$u.service"; done) 2>/dev/null |
  awk -v units="$units" 'BEGIN { n = split(units, name, " "); i = 1 }
    /^ActiveState=/ { active[i] = substr($0, 13) }
    /^UnitFileState=/ { enabled[i] = substr($0, 15) }
    /^FragmentPath=/ { path[i] = substr($0, 14) }
    /^$/ { i++; next }
    name[i] == "flanneld" && /^(FragmentPath|RequiredBy|WantedBy)=/ { print "unitprop=flanneld " $0 }
    name[i] == "etcd" && /^DropInPaths=/ { print "unitprop=etcd " $0 }
    name[i] == "docker" && /^(DropInPaths|ExecStart|EnvironmentFiles|Requires|BindsTo|PartOf|MainPID)=/ {
      print "unitprop=docker " $0 }
    END {
      for (k = 1; k <= n; k++) {
        print "unit=" name[k] " " active[k] " " enabled[k]
        if (name[k] == "docker") print "docker_unit=" path[k]
      }
    }')
echo "$unit_states"
fw_active= agent_active= unit= flanneld_unit= docker_pid= dropins=
while read -r key active rest; do
  case $key in
    unit=firewalld) fw_active=$active ;;
    unit=overlay-agent) agent_active=$active ;;
    docker_unit=*) unit=${key#docker_unit=} ;;
    unitprop=flanneld) case $active in FragmentPath=?*) flanneld_unit=yes ;; esac ;;
    unitprop=docker) case $active in MainPID=*) docker_pid=${active#MainPID=} ;; esac ;;
  esac
  case $key$active in unitprop=*DropInPaths=?*) dropins="$dropins ${active#DropInPaths=} $rest" ;; esac
done <<EOF
$unit_states
EOF
if [ "$fw_active" = active ] && command -v firewall-cmd >/dev/null 2>&1; then
  echo "fw_default_zone=$(firewall-cmd --get-default-zone 2>/dev/null)"
  echo "fw_version=$(firewall-cmd --version 2>/dev/null)"
  firewall-cmd --get-active-zones 2>/dev/null | awk '/^[^ \t]/ {z=$1}
    /^[ \t]+interfaces:/ {for (i = 2; i <= NF; i++) print "fw_iface=" $i " " z}'
  firewall-cmd --permanent --list-all-zones 2>/dev/null | awk '/^[^ \t]/ {z=$1}
    /^[ \t]+services:/ {for (i = 2; i <= NF; i++) print "fw_service=" z " " $i}'
fi
for d in /var/lib/etcd/*/member; do [ -d "$d" ] && echo "etcd_data=${d%/member}"; done
echo "agent_digest=$(cat "$digest_file" 2>/dev/null)"
# The install the running agent started with (its unit copies the digest as it starts).
[ "$agent_active" = active ] && echo "agent_started_digest=$(cat "$started_file" 2>/dev/null)"
# docker.mode: our drop-in, and docker's own unit with the seed's ExecStart edit (--bip=).
[ -f "$dropin" ] && echo "docker_dropin=yes"
[ -n "$unit" ] && grep -q '^ExecStart=.*--bip=' "$unit" 2>/dev/null && echo "docker_unit_edited=yes"
ip -o -4 addr show 2>/dev/null | while read -r _ dev _ cidr _; do echo "addr=$dev $cidr"; done
# A cluster built by hand (overlayctl/plan/handbuilt.py): flannel's devices (flannel0,
# flannelN, flannel.N, with -d: tun or vxlan, persistent or not) and the device routes into the
# Network; docker's and etcd's drop-ins that are not ours, whole (unit and path come from
# DropInPaths above); where flanneld's unit or such a drop-in exists, dockerd's running
# arguments and the running containers too (two docker runs, only there).
ip -o -d link show 2>/dev/null | awk -F': ' '$2 ~ /^flannel([0-9]+|\.[0-9]+)(@|$)/ { print "link=" $0 }'
[ -n "$network" ] && ip -o -4 route show root "$network" 2>/dev/null |
  awk '!/ via / { print "route=" $0 }'
handmade=$flanneld_unit
for d in $dropins; do
  [ -f "$d" ] || continue
  read -r first < "$d" || true
  case $first in "# Managed by overlayctl"*) continue ;; esac
  handmade=yes
  printf 'dropin=%s ' "$d"; base64 -w0 < "$d"; echo
done
if [ -n "$handmade" ]; then
  [ "${docker_pid:-0}" != 0 ] && tr '\0' '\n' < "/proc/$docker_pid/cmdline" | sed 's/^/docker_arg=/'
  ids=$(timeout 10 docker ps -q 2>/dev/null)
  # shellcheck disable=SC2086 # one word per container ID
  [ -n "$ids" ] && timeout 10 docker inspect --format \
    'container={{.Id}} {{.Name}} {{.HostConfig.RestartPolicy.Name}} {{.State.StartedAt}} {{.State.Pid}} {{.NetworkSettings.IPAddress}}' \
    $ids 2>/dev/null
fi
if command -v dpkg-query >/dev/null 2>&1; then
  # one dpkg-query for every name (unknown ones are only complained about on stderr)
  [ "$#" -gt 0 ] && dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
    while read -r name _ ok state; do
      [ "$ok $state" = "ok installed" ] && echo "pkg=$name"
    done
elif command -v rpm >/dev/null 2>&1; then
  for p in "$@"; do
    rpm -q --whatprovides "$p" >/dev/null 2>&1 && echo "pkg=$p"
  done
fi
true
