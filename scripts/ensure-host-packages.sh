#!/usr/bin/env bash
# Debian packages the tests use on the machine itself: haproxy (real HAProxy on
# loopback for the module tests), debootstrap (fleet image), shellcheck
# (ansible-test sanity), rsync, chromium (headless screenshot of the HTML
# report). Installs only what is missing.
set -euo pipefail
need=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-host-packages: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
