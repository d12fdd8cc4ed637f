# Take overlayctl's host firewall off a host (reset), or part of it (a re-run that no longer wants
# it). Works with firewalld stopped too (firewall-offline-cmd); a no-op for what is not there.
# $1 firewalld's folder, $2 what:
#   iptables  overlayctl-firewall stopped and disabled (its stop removes the chains; they are
#             removed here too should it have failed), its unit and rules files gone
#   legacy    older releases' firewalld services out of every zone (a zone naming a service whose
#             file is gone is refused at the next reload), their files gone, firewalld reloaded
#   all       both, and overlayctl's firewalld policies gone (reset)
# $3 the unit's name, $4 its file, $5 the rules file, $6 the INPUT chain, $7 the FORWARD chain.
set -u
dir=$1 what=$2 unit=$3 unit_file=$4 rules=$5 input=$6 forward=$7
if [ "$what" != legacy ]; then
  systemctl disable --now "$unit" >/dev/null 2>&1
  if command -v iptables >/dev/null 2>&1; then
    iptables -w -D INPUT -j "$input" 2>/dev/null
    iptables -w -F "$input" 2>/dev/null && iptables -w -X "$input"
    iptables -w -t mangle -D FORWARD -j "$forward" 2>/dev/null
    iptables -w -t mangle -F "$forward" 2>/dev/null && iptables -w -t mangle -X "$forward"
  fi
  if [ -e "$unit_file" ]; then rm -f "$unit_file"; systemctl daemon-reload; fi
  rm -f "$rules"
  [ "$what" = iptables ] && exit 0
fi
files=""
mine="$dir/services/overlayctl-*.xml $dir/zones/overlayctl.xml"
[ "$what" = all ] && mine="$mine $dir/policies/overlayctl-*.xml"
for f in $mine; do
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
