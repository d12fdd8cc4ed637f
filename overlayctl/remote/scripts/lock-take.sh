# Take the run's lock on a host (mkdir is atomic), only as root: a login that cannot act as root
# leaves no lock behind (/var/lock is world-writable). $1 lock dir, $2 holder JSON, $3 "yes": remove
# a stale lock first (--break-lock). Exit 0: taken. Exit 3: held (holder on stdout). Exit 5: not
# root.
[ "$(id -u)" = 0 ] || exit 5
[ "$3" = yes ] && rm -rf "$1"
if mkdir "$1" 2>/dev/null; then
  printf '%s\n' "$2" > "$1/holder"
  exit 0
fi
cat "$1/holder" 2>/dev/null || echo '{}'
exit 3
