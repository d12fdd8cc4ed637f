# Content, mode and owner of each path in $@, one line a path: "absent", or
# "file MODE USER:GROUP BASE64".
for p in "$@"; do
  if [ -f "$p" ]; then
    printf 'file %s ' "$(stat -c '%a %U:%G' "$p")"; base64 -w0 < "$p"; echo
  else
    echo absent
  fi
done
