#!/usr/bin/env bash
# Create the local base image every bot-bottle Dockerfile builds FROM.
#
# No container registry is reachable on the machines this project is built on
# (nor behind many corporate firewalls), so `FROM debian:trixie` cannot be
# pulled. Instead we debootstrap a minimal Debian root filesystem from the
# Debian mirror and `docker import` it. The daemon caches the result: the
# script is a no-op when the image already exists.
#
# Usage: scripts/base-image.sh [--force]
#   BOT_BOTTLE_BASE_IMAGE  image name to create  (default bot-bottle/base:trixie)
#   BOT_BOTTLE_DEBIAN_SUITE  Debian suite          (default trixie)
#   BOT_BOTTLE_DEBIAN_MIRROR Debian mirror URL     (default http://deb.debian.org/debian)
set -euo pipefail

image="${BOT_BOTTLE_BASE_IMAGE:-bot-bottle/base:trixie}"
suite="${BOT_BOTTLE_DEBIAN_SUITE:-trixie}"
mirror="${BOT_BOTTLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image already present"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "debootstrap is not installed: run 'apt-get install debootstrap' (Debian/Ubuntu) and retry" >&2
  exit 1
fi
if [[ $EUID -ne 0 ]]; then
  echo "debootstrap needs root: rerun as root (sudo $0)" >&2
  exit 1
fi

rootfs="$(mktemp -d /tmp/bot-bottle-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrapping Debian $suite (minbase) into $rootfs ..."
# ca-certificates so images can reach HTTPS package registries later.
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" \
  >"$rootfs.log" 2>&1 || { echo "debootstrap failed; see $rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Keep images small and apt quiet inside builds.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
echo "importing as $image ..."
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$image" >/dev/null
echo "base image $image created"
