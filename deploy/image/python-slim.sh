#!/bin/sh
# Builds a local stand-in for the python:3.11-slim base image from Debian packages, for hosts
# that reach a Debian mirror and a Python package index but no container registry (air-gapped
# builds behind a package mirror). The result has what deploy/Dockerfile.* use from the official
# image: Debian bookworm, `python` and `pip` in /usr/local/bin, Python's C headers (inductor
# compiles against them), CA certificates.
#
#   sudo deploy/image/python-slim.sh [TAG]      (default TAG: python:3.11-slim)
#
# DEBIAN_MIRROR picks the mirror (default: deb.debian.org). Certificates the host trusts beyond
# Debian's (/usr/local/share/ca-certificates, e.g. a proxy's) are trusted in the image too, and
# pip is told to use the system bundle: pip otherwise trusts only its own.
set -eu

tag=${1:-python:3.11-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
chroot "$rootfs" apt-get install -y --no-install-recommends \
  python3.11 python3.11-venv libpython3.11-dev ca-certificates
# A virtual environment at /usr/local puts python and pip where the official image has them,
# and leaves Debian's own python packages alone (bookworm refuses `pip install` system-wide).
chroot "$rootfs" python3.11 -m venv /usr/local
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
fi
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag"
