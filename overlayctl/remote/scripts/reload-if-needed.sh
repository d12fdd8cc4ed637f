# A phase's daemon-reload, only where systemd needs one: $1 the unit whose own file the phase
# wrote (never a drop-in: see HostPhase.unit_file_only). systemd (v240 or so on) loads a unit it
# had not found once its file appears, and says of a loaded unit whether its file changed on disk
# (NeedDaemonReload). A reload re-runs every generator and re-reads every unit: 0.18 CPU-s a host;
# two of the three per fresh host at 25 hosts went this way. Anything other than "loaded, no
# reload needed" reloads; prints "reloaded" or "not needed".
state=$(systemctl show -p LoadState -p NeedDaemonReload "$1" 2>/dev/null)
case $state in
  *LoadState=loaded*NeedDaemonReload=no* | *NeedDaemonReload=no*LoadState=loaded*)
    echo "not needed" ;;
  *) systemctl daemon-reload && echo reloaded ;;
esac
