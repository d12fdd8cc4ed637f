# reset: take overlayctl's firewalld services out of every zone (a zone naming a service whose file
# is gone is refused at the next reload), remove its files, reload. $1 firewalld's folder. Works
# with firewalld stopped too (firewall-offline-cmd); a no-op where overlayctl wrote no such file.
set -u
dir=$1
files=""
for f in "$dir"/services/overlayctl-*.xml "$dir"/zones/overlayctl.xml; do
  [ -e "$f" ] && files="$files $f"
done
[ -n "$files" ] || exit 0
if [ "$(systemctl is-active firewalld 2>/dev/null)" = active ]; then
  fw="firewall-cmd --permanent"
elif command -v firewall-offline-cmd >/dev/null 2>&1; then
  fw=firewall-offline-cmd
else
  fw=""
fi
if [ -n "$fw" ]; then
  $fw --list-all-zones 2>/dev/null | awk '/^[^ \t]/ {z=$1}
    /^[ \t]+services:/ {for (i = 2; i <= NF; i++) if ($i ~ /^overlayctl-/) print z, $i}' |
  while read -r zone service; do $fw --zone="$zone" --remove-service="$service" >/dev/null; done
fi
rm -f $files
if [ "$fw" = "firewall-cmd --permanent" ]; then firewall-cmd --reload >/dev/null; fi
true
