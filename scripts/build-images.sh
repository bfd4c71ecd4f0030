#!/usr/bin/env bash
# Build the local test fleet's image offline: debootstrap (Debian bookworm,
# minbase) + the recipe in images/fleet/, imported with `docker import`.
# The tag is a hash of the recipe and of this script, so an unchanged recipe
# reuses the existing image ("cached") and a changed one rebuilds it.
#   scripts/build-images.sh [--force]
# Env: FLEET_MIRROR (default http://deb.debian.org/debian), FLEET_SUITE (bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
recipe=images/fleet
name=grayrelease-fleet
mirror=${FLEET_MIRROR:-http://deb.debian.org/debian}
suite=${FLEET_SUITE:-bookworm}
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "build-images: unknown argument: $1 (only --force)" >&2; exit 2 ;;
esac

# Paths and contents both count, in a locale-independent order.
hash=$( { printf '%s\n' "$suite" "$mirror"
          for f in $(LC_ALL=C find "$recipe" scripts/build-images.sh -type f | LC_ALL=C sort); do
            printf '%s\n' "$f"; sha256sum < "$f"
          done; } | sha256sum | cut -c1-12)
tag="$name:$hash"

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$name:latest"
  echo "build-images: $tag cached"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "build-images: debootstrap needs root" >&2; exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-images: installing debootstrap from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

cache=$repo/.cache/images
mkdir -p "$cache/debs"
# One build at a time: two concurrent `make` runs would fight over the rootfs.
exec 9>"$cache/build.lock"
flock 9
if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$name:latest"
  echo "build-images: $tag cached (built by a concurrent run)"
  exit 0
fi

root=$cache/rootfs-$hash
cleanup() {
  # debootstrap may leave /proc or /sys mounted after a failure.
  for m in proc sys dev/pts; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
cleanup
start=$(date +%s)
include=$(grep -Ev '^[[:space:]]*(#|$)' "$recipe/packages.txt" | paste -sd, -)
echo "build-images: debootstrap $suite ($include)"
debootstrap --variant=minbase --include="$include" --cache-dir="$cache/debs" \
  "$suite" "$root" "$mirror" > "$cache/debootstrap.log" 2>&1 || {
    tail -n 30 "$cache/debootstrap.log" >&2
    echo "build-images: debootstrap failed; full log: $cache/debootstrap.log" >&2
    exit 1
  }
mapfile -t apt_packages < <(grep -Ev '^[[:space:]]*(#|$)' "$recipe/packages-apt.txt")
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "build-images: apt-get install in the root (${apt_packages[*]})"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  # No service may start in the chroot: policy-rc.d says no to every one.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
  { chroot "$root" apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"; } \
    > "$cache/apt.log" 2>&1 || {
      tail -n 30 "$cache/apt.log" >&2
      echo "build-images: apt-get install failed; full log: $cache/apt.log" >&2
      exit 1
    }
  rm -f "$root/usr/sbin/policy-rc.d"
  umount -l "$root/proc"
fi
cp "$recipe/customize.sh" "$root/tmp/customize.sh"
chroot "$root" /bin/sh /tmp/customize.sh
rm -f "$root/tmp/customize.sh"

echo "build-images: importing $tag"
tar -C "$root" --numeric-owner -c . \
  | docker import \
      -c 'ENV container=docker' \
      -c "LABEL org.grayrelease.recipe=$hash" \
      -c 'CMD ["/lib/systemd/systemd"]' \
      - "$tag" >/dev/null
docker tag "$tag" "$name:latest"
echo "build-images: built $tag in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1000000}'))"
