# verify: every ping from one test container at once, in one round trip. Run in turn, a host's
# pings cost about a second per peer (and a lost peer its whole timeout); here they cost the
# slowest one. $1 a marker, $2 the container's PID, $3 ping's -W seconds, $4 the plain ping's
# count, then TARGET SIZE pairs (SIZE: the Don't-Fragment ping's payload). Prints, for each
# target and each of its two pings: "MARKER INDEX plain|df EXIT", then ping's stdout (in no
# particular order: the marker lines say which is which).
# Cheap in processes, as 25 hosts run it at once on one machine in the lab: one nsenter into
# the container's network namespace for all pings (not one per ping), the plain pings 0.2 s
# apart (-i 0.2, root's right) instead of a second, and one cat of every result at the end.
marker=$1 pid=$2
shift 2
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
nsenter -t "$pid" -n sh -c '
marker=$1 dir=$2 wait=$3 count=$4
shift 4
n=0
while [ "$#" -ge 2 ]; do
  (
    out=$(ping -n -q -W "$wait" -c "$count" -i 0.2 "$1" 2>/dev/null)
    printf "\n%s %s plain %s\n%s\n" "$marker" "$n" "$?" "$out" >"$dir/$n.plain"
    out=$(ping -n -q -W "$wait" -c 1 -M do -s "$2" "$1" 2>/dev/null)
    printf "\n%s %s df %s\n%s\n" "$marker" "$n" "$?" "$out" >"$dir/$n.df"
  ) &
  n=$((n + 1))
  shift 2
done
wait
' sh "$marker" "$dir" "$@"
cat "$dir"/* 2>/dev/null
true
