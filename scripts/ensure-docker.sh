#!/usr/bin/env bash
# Make sure a docker engine answers on /var/run/docker.sock: install it from
# Debian's packages where missing, start dockerd in the background if no engine
# runs. Idempotent and quiet when everything is already there.
set -euo pipefail
# Every systemd container holds several inotify instances of the host's root
# user; at the kernel's default of 128 the fleets of two test lanes exhaust
# them and a container's boot hangs forever ("Failed to create inotify object:
# Too many open files", measured 2026-11-28 with 4 fleets up). Raise it, never lower it.
limit=/proc/sys/fs/inotify/max_user_instances
if [ -w "$limit" ] && [ "$(cat "$limit")" -lt 1024 ]; then
  echo 1024 > "$limit" || echo "ensure-docker: could not raise $limit; systemd containers may hang at boot" >&2
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd"
  mkdir -p /var/log
  # A daemon must not keep the caller's descriptors: started inside `make
  # test`, dockerd inherited the test command's output pipe (fd 3, and CI's
  # own stdout as fd 4), so tee never saw its end, the command waited for it
  # forever after printing its summary and CI cut the run off at 90 min
  # (stop 27, measured: every stage done at 4115 s). Only 0-2 go to it, to a
  # log; its own session, so a signal to the test command's group misses it.
  (
    for fd in "/proc/$BASHPID/fd"/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid dockerd </dev/null >/var/log/dockerd.log 2>&1
  ) &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
docker info >/dev/null 2>&1 || { echo "ensure-docker: dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1; }
echo "ensure-docker: engine $(docker version --format '{{.Server.Version}}') ready"
