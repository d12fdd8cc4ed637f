# adopt's outage probes (plan/outage.py says why they exist and how they are read). $1 says what:
#   list                        the running containers, "ID NAME PID STARTED POLICY IP" a line
#                               (IP on docker's own bridge, the overlay's: "-" for the others)
#   start DIR SECONDS TARGET..  one `ping -D -O` per TARGET from this host's namespace, in the
#                               background, each ended by `timeout SECONDS` whatever happens to
#                               us; DIR (new) keeps N.pid, N.target and N.log for each
#   stop DIR MARKER             stops them by PID, prints "MARKER N TARGET" and each log, and
#                               removes DIR
case $1 in
list)
  ids=$(docker ps -q 2>/dev/null)
  [ -n "$ids" ] || exit 0
  # shellcheck disable=SC2086 # one argument per container ID
  docker inspect --format '{{.Id}} {{.Name}} {{.State.Pid}} {{.State.StartedAt}} {{if .HostConfig.RestartPolicy.Name}}{{.HostConfig.RestartPolicy.Name}}{{else}}no{{end}} {{with .NetworkSettings.Networks.bridge}}{{or .IPAddress "-"}}{{else}}-{{end}}' $ids
  ;;
start)
  dir=$2 seconds=$3
  shift 3
  mkdir -p "$(dirname "$dir")" && mkdir -m 0700 "$dir" || exit 1
  n=0
  for target in "$@"; do
    printf '%s\n' "$target" >"$dir/$n.target"
    setsid timeout "$seconds" ping -D -O -n -i 0.2 -W 1 "$target" </dev/null >"$dir/$n.log" 2>&1 &
    echo $! >"$dir/$n.pid"
    n=$((n + 1))
  done
  ;;
stop)
  dir=$2 marker=$3
  [ -d "$dir" ] || exit 3
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null
  done
  sleep 0.3
  for target in "$dir"/*.target; do
    [ -e "$target" ] || continue
    n=$(basename "$target" .target)
    printf '\n%s %s %s\n' "$marker" "$n" "$(cat "$target")"
    cat "$dir/$n.log" 2>/dev/null
  done
  rm -rf "$dir"
  ;;
*)
  echo "outage-probe: unknown command $1" >&2
  exit 2
  ;;
esac
