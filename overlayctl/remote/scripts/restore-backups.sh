# reset: put back what overlayctl replaced, remove what it created. $1 the backup root.
set -eu
root=$1
[ -d "$root" ] || exit 0
find "$root" -type f | while read -r saved; do
  target=${saved#"$root"}
  case "$target" in
    *.absent) rm -f "${target%.absent}"; rmdir "$(dirname "$target")" 2>/dev/null || true ;;
    *) cp -a "$saved" "$target" ;;
  esac
done
rm -rf "$root"
