# The etcd running on this member as it runs NOW, whoever configured it (facts, first member;
# parsed by overlayctl/plan/handbuilt.py). $1 the CA, $2 $3 the admin certificate and key; then
# the v2 dump command (remote/scripts/etcd_v2_dump.py through plain-http endpoints), run only
# where etcd has v2 on.
#
# Why not etcdctl with the inventory's endpoints: on a cluster built by hand those say https
# where etcd serves plain http, and what it serves is the question. So the client URL comes from
# the running etcd's own environment (what its unit's EnvironmentFile gave it) or flags, 0.0.0.0
# read as 127.0.0.1. Prints nothing when no etcd runs here; else client_url=, peer_listen= (the
# peer URLs it listens on, to compare with what the membership records), members_exit= and
# members= (etcdctl member list -w json: every member's ID, name and peer URLs as etcd records
# them), version= (the running binary's), and where v2 is on v2_exit= and v2= (etcd's answer,
# on one line). Shell and one etcdctl:
# a Python start with ssl and urllib took 84 ms on a lab host, this about 35.
ca=$1; cert=$2; key=$3; shift 3
# etcd.service's own process, as systemd started it: never any process that calls itself etcd
# (a user's, a container's), whose environment would be read and whose binary run below.
pid=$(systemctl show -p MainPID --value etcd.service 2>/dev/null)
[ "${pid:-0}" != 0 ] && [ -d "/proc/$pid" ] || exit 0
# ETCD_LISTEN_CLIENT_URLS, ETCD_ENABLE_V2 and ETCD_LISTEN_PEER_URLS from the environment, flags
# on top (Go's: a string as --x=y or --x y, a bool as --x or --x=y)
set_of=$( { tr '\0' '\n' < "/proc/$pid/environ"; echo --; tr '\0' '\n' < "/proc/$pid/cmdline"; } \
    2>/dev/null | awk '
  /^--$/ && !flags { flags = 1; next }
  !flags { if (sub(/^ETCD_LISTEN_CLIENT_URLS=/, "")) urls = $0
           else if (sub(/^ETCD_LISTEN_PEER_URLS=/, "")) peers = $0
           else if (sub(/^ETCD_ENABLE_V2=/, "")) v2 = $0
           next }
  next_urls { urls = $0; next_urls = 0; next }
  next_peers { peers = $0; next_peers = 0; next }
  /^--?listen-client-urls=/ { sub(/^[^=]*=/, ""); urls = $0; next }
  /^--?listen-client-urls$/ { next_urls = 1; next }
  /^--?listen-peer-urls=/ { sub(/^[^=]*=/, ""); peers = $0; next }
  /^--?listen-peer-urls$/ { next_peers = 1; next }
  /^--?enable-v2=/ { sub(/^[^=]*=/, ""); v2 = $0; next }
  /^--?enable-v2$/ { v2 = "true"; next }
  END { print urls; print v2; print peers }')
urls=$(echo "$set_of" | sed -n 1p); v2=$(echo "$set_of" | sed -n 2p)
client=
for u in $(echo "${urls:-http://localhost:2379}" | tr ',' ' '); do
  case $u in
    *://127.0.0.1:*|*://localhost:*|*://0.0.0.0:*|*://\[::\]:*)
      client="${u%%://*}://127.0.0.1:${u##*:}"; break ;;
  esac
  [ -n "$client" ] || client=$u
done
client=${client%/}
echo "client_url=$client"
peers=$(echo "$set_of" | sed -n 3p)
echo "peer_listen=${peers:-http://localhost:2380}"  # etcd's default
# the running binary's own version (adopt needs 3.4+: the agent speaks etcd's /v3/ gateway)
echo "version=$("/proc/$pid/exe" --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
tls=
case $client in https:*) tls="--cacert=$ca --cert=$cert --key=$key" ;; esac
# shellcheck disable=SC2086 # the certificate flags are words
members=$(ETCDCTL_API=3 timeout 10 etcdctl --endpoints="$client" $tls --dial-timeout=2s \
  --command-timeout=3s member list -w json 2>&1)
echo "members_exit=$?"
echo "members=$(printf %s "$members" | tr '\n' ' ')"
case $v2 in true|TRUE|True|1) ;; *) exit 0 ;; esac
out=$("$@" 2>&1)
echo "v2_exit=$?"
echo "v2=$(printf %s "$out" | tr '\n' ' ')"
