# status: each lease's time left. $@ the etcdctl base command; stdin: lease ids in hex, one a
# line. Prints one JSON object a line.
while read -r id; do
  "$@" lease timetolive "$id" -w json 2>/dev/null || echo '{}'
  echo
done
