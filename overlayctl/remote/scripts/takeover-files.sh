# adopt's TakeOver: hand-made files out of the way and back. $1 stash|restore, $2 the backup root
# (put-file.sh's: a path's first original is kept at ROOT/PATH, or ROOT/PATH.absent when there
# was none), then the paths.
#   stash:   keep each file's first original under the root (unless one is kept already), then
#            remove the file (a hand-made docker drop-in, flanneld's unit under /etc before a mask)
#   restore: put each path back as its backup says (a rollback): the original, or no file
set -eu
mode=$1; root=$2; shift 2
for path in "$@"; do
  bak=$root$path
  case $mode in
    stash)
      [ -e "$path" ] || [ -L "$path" ] || continue
      if [ ! -e "$bak" ] && [ ! -e "$bak.absent" ]; then
        mkdir -p "$(dirname "$bak")"
        cp -a "$path" "$bak"
      fi
      rm -f "$path" ;;
    restore)
      if [ -e "$bak" ]; then
        rm -f "$path"  # a mask's symlink to /dev/null would take the copy
        cp -a "$bak" "$path"
      elif [ -e "$bak.absent" ]; then
        rm -f "$path"
      fi ;;
    *) echo "takeover-files: unknown mode $mode" >&2; exit 2 ;;
  esac
done
