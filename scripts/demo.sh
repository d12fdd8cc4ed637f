#!/usr/bin/env bash
# The README demo: a lab of emulated hosts, then proof that each answers over SSH with systemd up.
# Then the whole runbook: init (etcd with TLS, the network config, the agent, docker's bip),
# verify (every container pings every other) and status.
set -euo pipefail
lab=${1:-demo}
hosts=${2:-3}
bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
overlayctl="$bin/overlayctl"

if "$overlayctl" lab list -o json | grep -q "\"name\": \"$lab\""; then
  echo "demo: lab '$lab' already exists; showing it (remove it with: make demo-down LAB=$lab)"
else
  "$overlayctl" lab up --name "$lab" --hosts "$hosts"
fi
echo
echo "demo: every host, over SSH from the workstation namespace with strict host key checking:"
"$overlayctl" lab health --name "$lab"
echo
echo "demo: overlayctl init, run from the lab's workstation namespace:"
"$overlayctl" lab shell --name "$lab" -- overlayctl init
echo
echo "demo: overlayctl verify: every container pings every other, also with DF at the MTU:"
"$overlayctl" lab shell --name "$lab" -- overlayctl verify \
  --image lab/busybox:1 --import-from /usr/local/share/overlayctl-lab/busybox.tar
echo
echo "demo: overlayctl status:"
"$overlayctl" lab shell --name "$lab" -- overlayctl status -v
echo
echo "demo: try it yourself:"
echo "  $overlayctl lab shell --name $lab      # a shell on the lab LAN, OVERLAYCTL_INVENTORY set"
echo "  $overlayctl lab exec --name $lab node1 -- systemctl status ssh"
echo "  make demo-down LAB=$lab                 # remove the lab"
