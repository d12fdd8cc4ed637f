# Take the run's lock on a host (mkdir is atomic), only as root: a login that cannot act as root
# leaves no lock behind. $1 lock dir, inside a folder only root may write (made here 0700;
# world-writable /run/lock would let any local user plant a lock and block every run), $2 holder
# JSON, $3 "yes": remove a stale lock first (--break-lock). Exit 0: taken. Exit 3: held (holder on
# stdout). Exit 5: not root. Exit 6: the folder exists but is not root's own 0700 (a symlink, a
# file, another owner or mode): it is not used, and stderr says why.
[ "$(id -u)" = 0 ] || exit 5
dir=${1%/*}
mkdir -m 0700 "$dir" 2>/dev/null
if [ -L "$dir" ] || [ ! -d "$dir" ] || [ "$(stat -c '%u %a' "$dir")" != "0 700" ]; then
  echo "$dir is not a folder owned by root with mode 0700 ($(stat -c '%F, owner uid %u, mode %a' "$dir" 2>/dev/null)): refusing to keep the lock there; remove it" >&2
  exit 6
fi
[ "$3" = yes ] && rm -rf "$1"
if mkdir "$1" 2>/dev/null; then
  printf '%s\n' "$2" > "$1/holder"
  exit 0
fi
cat "$1/holder" 2>/dev/null || echo '{}'
exit 3
