"""Undoing overlayctl's firewalld configuration (init writes it: render.py, plan.py, apply.py).

A zone that names a service whose definition is gone makes firewalld refuse that zone at the next
reload, so the services are taken out of every zone before their files are removed; then
firewalld is reloaded so its runtime forgets the overlay's zone too.
"""

from __future__ import annotations

from overlayctl import paths as hp
from overlayctl.remote.ssh import Remote

# $1: firewalld's folder. Works with firewalld stopped too (firewall-offline-cmd), and is a no-op
# on hosts where overlayctl wrote no firewalld file.
_RESET = r"""
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
"""


def reset(remote: Remote) -> None:
    """Take overlayctl's services out of every zone, remove its firewalld files, reload."""
    remote.script(_RESET, hp.FIREWALLD_DIR, name="firewalld-reset", check=False, timeout=120)
