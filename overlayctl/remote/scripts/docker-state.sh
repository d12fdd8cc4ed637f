# The docker phase: docker0's address, the flags the agent wants, dockerd's arguments (none when
# docker is not running) and the lease, in one round trip. $1 the agent's docker options file,
# $2 its subnet.env.
echo "docker0=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}')"
[ -r "$1" ] && . "$1" && echo "want=$DOCKER_NETWORK_OPTIONS"
pid=$(systemctl show -p MainPID --value docker 2>/dev/null)
[ "${pid:-0}" != 0 ] && tr '\0' '\n' < "/proc/$pid/cmdline" | sed 's/^/arg=/'
[ -r "$2" ] && . "$2" && echo "lease=$FLANNEL_SUBNET"
exit 0
