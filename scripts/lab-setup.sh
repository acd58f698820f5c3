#!/usr/bin/env bash
# Builds the virtual lab's Talos stand-in image (Debian kernel + initramfs with busybox,
# python3.11, etcd, extlinux and the stand-in agent) from Debian packages fetched with
# `apt-get download` and unpacked with `dpkg -x` (nothing is installed on the host), plus
# cp311 manylinux wheels from PyPI. The result is cached outside the working tree in
# ${PROVISIONER_LAB_IMAGE_CACHE:-~/.cache/provisioner/lab-image}/<content hash>/ and linked
# from .lab/image; a second run with unchanged inputs only checks the hash (about 1 s).
# First build on a fresh machine: about 20 s (downloads ~110 MB of .debs and wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in apt-get dpkg-deb readelf cpio zstd; do
  command -v "$tool" >/dev/null || { echo "lab-setup: $tool is missing; run scripts/setup.sh" >&2; exit 1; }
done
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
SECONDS=0
.venv/bin/python -m provisioner.lab.image --link .lab/image "$@"
echo "lab-setup: ok (${SECONDS} s)"
