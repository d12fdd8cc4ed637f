# status, per host: key=value lines, then the IPv4 routes and the vxlan fdb entries.
# $1 the agent's health port, $2 subnet.env.
echo "agent_active=$(systemctl is-active overlay-agent 2>/dev/null)"
echo "agent_ready=$(python3 -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:%s/readyz" % sys.argv[1], timeout=2).status)
except Exception as exc:
    print(getattr(exc, "code", 0))' "$1")"
if [ -r "$2" ]; then . "$2"; echo "lease=$FLANNEL_SUBNET"; echo "mtu=$FLANNEL_MTU"; fi
echo "docker_active=$(systemctl is-active docker 2>/dev/null)"
echo "docker0=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}')"
ip -4 route show | sed 's/^/route=/'
for dev in $(ip -o link show type vxlan 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  bridge fdb show dev "$dev" 2>/dev/null | sed 's/^/fdb=/'
done
