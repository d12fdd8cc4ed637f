# Give the lock back, only our own. $1 lock dir, $2 our token.
grep -qF "$2" "$1/holder" 2>/dev/null && rm -rf "$1"
exit 0
