# adopt's TakeOver: flanneld's and the agent's units, the agent's readiness and lease, flannel's
# devices with the processes holding them, docker's unit as systemd has it loaded, its files,
# dockerd's running argv and docker0, in one round trip (parsed by overlayctl/plan/takeover.py).
# $1 the agent's docker options file, $2 its subnet.env, $3 its health port.
opts=$1; subnet_env=$2; port=$3
for u in flanneld overlay-agent; do
  printf 'unit=%s' "$u"
  systemctl show "$u.service" -p LoadState -p ActiveState -p UnitFileState -p FragmentPath \
    2>/dev/null | sort | tr '\n' ' ' | sed 's/^/ /'
  echo
done
systemctl show flanneld.service -p EnvironmentFiles 2>/dev/null | sed 's/^/flanneld./'
if systemctl -q is-active overlay-agent 2>/dev/null &&
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
  echo "agent_ready=yes"
fi
[ -r "$subnet_env" ] && . "$subnet_env" && echo "lease=$FLANNEL_SUBNET"
[ -r "$opts" ] && . "$opts" && echo "want=$DOCKER_NETWORK_OPTIONS"
# flannel's devices, each with the processes that hold it open (a TUN's fdinfo says `iff: NAME`)
for d in /sys/class/net/flannel*; do
  [ -e "$d" ] || continue
  n=${d##*/}
  holders=$(grep -ls "^iff:[[:space:]]*$n\$" /proc/[0-9]*/fdinfo/* 2>/dev/null |
    cut -d/ -f3 | sort -u | tr '\n' ' ')
  echo "link=$n $holders"
done
show=$(systemctl show docker.service -p DropInPaths -p ExecStart -p EnvironmentFiles \
  -p Requires -p BindsTo -p PartOf -p FragmentPath -p MainPID -p NeedDaemonReload 2>/dev/null)
echo "$show" | sed 's/^/docker./'
echo "docker0=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}')"
pid=$(echo "$show" | sed -n 's/^MainPID=//p')
[ "${pid:-0}" != 0 ] && tr '\0' '\n' < "/proc/$pid/cmdline" | sed 's/^/arg=/'
# docker's unit files and daemon.json, whole (base64, one line each; "-" when absent)
paths="$(echo "$show" | sed -n 's/^FragmentPath=//p') $(echo "$show" | sed -n 's/^DropInPaths=//p')"
for p in $paths /etc/docker/daemon.json; do
  if [ -f "$p" ]; then printf 'file=%s ' "$p"; base64 -w0 < "$p"; echo; else echo "file=$p -"; fi
done
exit 0
