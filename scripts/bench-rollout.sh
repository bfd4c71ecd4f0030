#!/usr/bin/env bash
# Rollout benchmark on the local fleet: baseline (bench/rolling_update.yml, a
# hand-written serial rolling update) vs grayrelease.canary.rollout, same
# v1 -> v2 update under the same mixed load (fast + slow requests through lb1).
# Prints wall times, failed requests, tasks per batch, the ratio and targets;
# figures also in .build/bench-rollout.json. See bench/bench_rollout.py.
#   make bench-rollout
#   BENCH_WHICH=baseline|ours|both  BENCH_COLLECTION_ROOT=DIR  make bench-rollout
# Over SSH (unprivileged login user, become through sudo, pipelining,
# ControlPersist; docs/ssh.md) on the ssh scenario's fleet (ssh-lb1,
# ssh-app1..3) or on the default fleet (lb1, lb2, app1-6) with sshd started:
#   BENCH_TRANSPORT=ssh [BENCH_SSH_FLEET=ssh|default] make bench-rollout
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
scripts/ensure-docker.sh >/dev/null
exec "$PWD/.venv/bin/python" bench/bench_rollout.py
