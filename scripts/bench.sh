#!/usr/bin/env bash
# Benchmarks (figures printed, nothing asserted): the decision plugins
# (planner, health_check fan-out, judge) and the drain -> ready cycle of
# community.general.haproxy vs grayrelease.canary.haproxy_server on a real
# loopback HAProxy; the balancer role on 1 vs 4 loopback HAProxies (on-self
# in parallel vs delegated).
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/bench_decisions.py
python bench/compare_haproxy.py
python bench/bench_balancers.py
