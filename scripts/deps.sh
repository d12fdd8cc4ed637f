#!/usr/bin/env bash
# Installs the Debian packages the workstation side needs (lab, tests, benchmarks).
# Idempotent: asks apt only when something is missing.
set -euo pipefail
packages=(
  debootstrap systemd-container iproute2 iptables openssh-client openssh-server
  etcd-server etcd-client iperf3 iputils-ping busybox-static kmod
  vagrant  # `vagrant validate` of the Vagrantfile, and the vm tier's VMs
  # The vm tier (tests/vm): libvirt and QEMU run inside a namespace the test makes, never as
  # this machine's services; `overlayctl lab box` builds the box (sfdisk, qemu-img).
  vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base fdisk
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Without systemd, invoke-rc.d would start libvirtd (and its NAT network) in this namespace:
  # forbid every service start while installing, unless a policy already exists.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/deps.sh: no service starts during this install\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts these on install; the project starts its own instances inside namespaces.
  for unit in etcd ssh libvirtd virtlogd libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
    virtlogd.socket virtlogd-admin.socket; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
echo "deps: ok"
