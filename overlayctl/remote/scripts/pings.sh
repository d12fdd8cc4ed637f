# verify: every ping from one test container at once, in one round trip. Run in turn, a host's
# pings cost about a second per peer (and a lost peer its whole timeout); here they cost the
# slowest one. $1 a marker, $2 the container's PID, $3 ping's -W seconds, $4 the plain ping's
# count, then TARGET SIZE pairs (SIZE: the Don't-Fragment ping's payload). Prints, for each
# target in order and each of its two pings: "MARKER INDEX plain|df EXIT", then ping's stdout.
marker=$1 pid=$2 wait=$3 count=$4
shift 4
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
n=0
while [ "$#" -ge 2 ]; do
  (
    nsenter -t "$pid" -n ping -n -q -W "$wait" -c "$count" "$1" >"$dir/$n.plain" 2>/dev/null
    echo $? >"$dir/$n.plain.rc"
    nsenter -t "$pid" -n ping -n -q -W "$wait" -c 1 -M do -s "$2" "$1" >"$dir/$n.df" 2>/dev/null
    echo $? >"$dir/$n.df.rc"
  ) &
  n=$((n + 1))
  shift 2
done
wait
i=0
while [ "$i" -lt "$n" ]; do
  for kind in plain df; do
    printf '\n%s %s %s %s\n' "$marker" "$i" "$kind" "$(cat "$dir/$i.$kind.rc" 2>/dev/null || echo 255)"
    cat "$dir/$i.$kind" 2>/dev/null
  done
  i=$((i + 1))
done
