# What a host is like before we change it, in one round trip (parsed by overlayctl/plan/facts.py).
# $1 the agent's digest file, $2 overlayctl's docker drop-in, $3 the digest the running agent
# started with; then the package names to look up
# (Debian and RHEL names alike; unknown names are just absent; on RHEL a name counts when an
# installed package provides it, e.g. iptables by iptables-nft on EL9). firewalld, when active: the
# version, the default zone, the runtime zone of each interface and the permanent services of
# each zone.
digest_file=$1; dropin=$2; started_file=$3; shift 3
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"
echo "os_like=${ID_LIKE:-}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "hostname=$(hostname)"
echo "python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
for m in apt-get dnf yum; do
  if command -v "$m" >/dev/null 2>&1; then echo "pkg_manager=$m"; break; fi
done
echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
[ -d /run/systemd/system ] && echo "systemd=yes"
for u in etcd overlay-agent docker firewalld overlayctl-firewall; do
  active=$(systemctl is-active "$u" 2>/dev/null || true)
  enabled=$(systemctl is-enabled "$u" 2>/dev/null || true)
  echo "unit=$u $active $enabled"
done
if [ "$(systemctl is-active firewalld 2>/dev/null)" = active ] &&
   command -v firewall-cmd >/dev/null 2>&1; then
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
[ "$(systemctl is-active overlay-agent 2>/dev/null)" = active ] &&
  echo "agent_started_digest=$(cat "$started_file" 2>/dev/null)"
# docker.mode: our drop-in, and docker's own unit with the seed's ExecStart edit (--bip=).
[ -f "$dropin" ] && echo "docker_dropin=yes"
unit=$(systemctl show -p FragmentPath --value docker 2>/dev/null)
echo "docker_unit=$unit"
[ -n "$unit" ] && grep -q '^ExecStart=.*--bip=' "$unit" 2>/dev/null && echo "docker_unit_edited=yes"
ip -o -4 addr show 2>/dev/null | while read -r _ dev _ cidr _; do echo "addr=$dev $cidr"; done
for p in "$@"; do
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' && echo "pkg=$p"
  elif command -v rpm >/dev/null 2>&1; then
    rpm -q --whatprovides "$p" >/dev/null 2>&1 && echo "pkg=$p"
  fi
done
true
