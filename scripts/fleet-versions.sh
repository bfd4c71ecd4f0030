#!/usr/bin/env bash
# Versions served through each balancer of the local fleet (see fleet-versions.py).
#   scripts/fleet-versions.sh [--requests N] [--path /version] [BALANCER ...]
exec python3 "$(dirname "$0")/fleet-versions.py" "$@"
