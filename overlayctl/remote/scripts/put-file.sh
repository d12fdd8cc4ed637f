# Write a file atomically (temp file + rename), keeping the first original under the backup root.
# $1 path, $2 mode (octal), $3 owner, $4 backup path; content (base64) on stdin.
set -eu
path=$1; mode=$2; owner=$3; bak=$4
dir=$(dirname "$path")
mkdir -p "$dir"
tmp="$dir/.$(basename "$path").overlayctl-tmp"
umask 077
base64 -d > "$tmp"
chmod "$mode" "$tmp"
chown "$owner" "$tmp"
if [ ! -e "$bak" ] && [ ! -e "$bak.absent" ]; then
  mkdir -p "$(dirname "$bak")"
  if [ -e "$path" ]; then cp -a "$path" "$bak"; else : > "$bak.absent"; fi
fi
sync "$tmp" 2>/dev/null || true
mv -f "$tmp" "$path"
