#!/usr/bin/env bash
# Installs the Debian packages the workstation side needs (lab, tests, benchmarks).
# Idempotent: asks apt only when something is missing.
set -euo pipefail
packages=(
  debootstrap systemd-container iproute2 iptables openssh-client openssh-server
  etcd-server etcd-client iperf3 iputils-ping busybox-static kmod
  vagrant  # only for `vagrant validate` of the Vagrantfile (14 MB, about 20 s; no hypervisor)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts these on install; the project starts its own instances inside namespaces.
  for unit in etcd ssh; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
echo "deps: ok"
