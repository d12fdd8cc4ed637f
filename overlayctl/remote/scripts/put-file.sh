# Write files atomically (temp file + rename in the same folder), keeping each one's first original
# under the backup root (or a marker that it did not exist), so `reset` can put it back. Per file,
# 4 arguments: path, mode (octal), owner, backup path; on stdin, one line of base64 content per
# file, in the same order. Several files cost one round trip.
set -eu
while [ "$#" -ge 4 ]; do
  path=$1; mode=$2; owner=$3; bak=$4; shift 4
  IFS= read -r data || true
  dir=$(dirname "$path")
  mkdir -p "$dir"
  tmp="$dir/.$(basename "$path").overlayctl-tmp"
  (umask 077 && printf '%s' "$data" | base64 -d > "$tmp")
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  if [ ! -e "$bak" ] && [ ! -e "$bak.absent" ]; then
    mkdir -p "$(dirname "$bak")"
    if [ -e "$path" ]; then cp -a "$path" "$bak"; else : > "$bak.absent"; fi
  fi
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$path"
done
