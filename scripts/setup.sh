#!/usr/bin/env bash
# Installs everything provisioner needs on a fresh Debian 12 machine: system packages
# (dnsmasq, QEMU, iPXE, ipmitool, nginx for the HTTP benchmark, etcd for the lab's
# Talos stand-in) and a virtualenv in .venv with the package and its test tools.
# Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  dnsmasq-base          # DHCP/TFTP for network boot (the daemon binary, no system service)
  ipxe                  # undionly.kpxe, ipxe.efi, snponly.efi served over TFTP
  ipxe-qemu             # the NIC option ROMs QEMU boots from
  qemu-system-x86       # the lab's virtual nodes (TCG)
  qemu-utils            # qemu-img for lab disks
  ipmitool              # independent IPMI client used by tests
  iproute2              # network namespaces, bridges, veth, taps
  nginx-light           # reference server for bench-http
  busybox-static        # the lab stand-in's initramfs userland
  etcd-server           # real etcd inside the lab stand-in
  etcd-client           # etcdctl for lab diagnostics
  cpio xz-utils zstd    # initramfs packing
  dosfstools fdisk e2fsprogs  # stand-in install: partition and format the install disk
  isc-dhcp-client       # dhclient: an independent DHCP client for the netboot tests
  openssh-server        # sshd for rack boot-server tests
  ovmf                  # UEFI firmware (OVMF) for the two-rack lab's UEFI nodes
  mtools                # UEFI disk test: fill the ESP on the host without a vfat mount
  chromium chromium-driver  # report tests: open the HTML report in headless Chromium
  curl
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
bash scripts/lab-setup.sh  # the lab's Talos stand-in image (cached; ~1 s when unchanged)
echo "setup: ok"
