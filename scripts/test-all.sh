#!/usr/bin/env bash
# The one test command (`make test`): every stage runs even when an earlier one
# failed, so a single run shows everything that is wrong; the exit status is
# non-zero if any stage failed. Stage timings are printed at the end.
#
# Three lanes at once, the stages of each one after another. Lanes A and B:
# the molecule scenarios, one fleet each at a time (a scenario's containers
# have fixed names: the ones sharing the default fleet's names, rollout and
# balancer, are in one lane). Lane C: the checks that need no fleet, niced so
# that the fleets come first and these fill the cores the fleets leave: the
# unit tests, sanity and ansible-lint on 2.19, then the ansible-core matrix
# (2.16-2.18: unit and sanity, each in a venv of its own by recipe hash;
# issue 23), after one fleet scenario on the oldest core (MATRIX_SCENARIO,
# adopt, not niced), and then the scenarios of LANE_C (not niced: the
# matrix is done by then). SERIAL=1 runs every scenario in one lane;
# SCENARIOS="a b" only those; MATRIX_CORES="" leaves the matrix out.
#
# The command is bound by CPU, not by waiting: it takes about its CPU work
# divided by 2 cores, so what shortens it is less work, and lanes that end
# together with the cores busy to the end. Measured (sessions 13-15): a module
# a task runs costs 0.3-0.5 s of CPU in the fleet's container (ansible-core
# 2.19 compiles module_utils.basic from the AnsiballZ zip on every run) plus
# ~0.45 s in ansible-playbook and 0.1 s in docker; a fault case ~70 CPU-s.
#
# Why this layout (session 15). CI's run of 513074e (three lanes: A rollout,
# balancer, ssh; B release, faults, judge; C adopt, the niced matrix, then
# containers, nginx, routing) reached TEST_DEADLINE at 5100 s: the stages
# before the lanes took 651 s with one core idle through sanity and
# ansible-lint (single-threaded), lanes A and B ended at ~4210 s, and lane C's
# scenarios waited behind its niced matrix (2.16 unit 1570 s) and ran alone
# to the end. Now nothing but set-up runs before the lanes, the checks fill
# lane C, and every scenario is in lane A or B (measured walls in that run:
# rollout 2774, faults 2433, release 531, judge 595, balancer 434, ssh 357,
# containers 326, nginx 510, routing ~680 s; faults' reseeds and the
# strategy's connection loading since cut ~20% of a fault case).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH=$PWD/.venv/bin:$PATH

# Measured in a clean-clone run of be0198a with lanes A rollout balancer ssh
# nginx, B release faults judge containers routing, C as now: total 4152 s,
# the machine busy 7866 of 8304 CPU-s; lane C was done at 2977 s, A at 4152,
# B at 4069 (rollout 2915, faults 1902, judge 622, nginx 644, routing 599,
# release 548, adopt 426, containers 387, balancer 328, ssh 254; unit 751,
# sanity 422, ansible-lint 168, niced). So containers and ssh go to the end
# of lane C: the lanes then come out at ~3,600-3,900 s there.
LANE_A=${LANE_A:-"rollout balancer nginx"}
LANE_B=${LANE_B:-"adopt release faults judge routing"}
LANE_C=${LANE_C:-"containers ssh"}
if [ -n "${SCENARIOS:-}" ]; then LANE_A=$SCENARIOS LANE_B="" LANE_C=""; fi
if [ -n "${SERIAL:-}" ]; then LANE_A="$LANE_A $LANE_B $LANE_C" LANE_B="" LANE_C=""; fi
results_file=$(mktemp)
MATRIX_CORES=${MATRIX_CORES-"2.16 2.17 2.18"}
MATRIX_SCENARIO=${MATRIX_SCENARIO-adopt}
# The matrix's fleet scenario runs once, on the oldest core, not also in a
# lane on 2.19 (nor at the same time there: its fleet's container names are
# fixed): every scenario is one fleet's worth of the 2 cores (adopt
# ~8 min), and the others all run on 2.19. Without the matrix it runs on 2.19.
if [ -n "$MATRIX_CORES" ] && [ -n "$MATRIX_SCENARIO" ]; then
  without() { local s out=""; for s in $1; do [ "$s" = "$2" ] || out="$out $s"; done; echo "${out# }"; }
  LANE_A=$(without "$LANE_A" "$MATRIX_SCENARIO") LANE_B=$(without "$LANE_B" "$MATRIX_SCENARIO")
  LANE_C=$(without "$LANE_C" "$MATRIX_SCENARIO")
fi
mkdir -p .build
failed=0
# Each run's whole output (lane A's and the stage lines on stdout, lanes B
# and C in their own logs) is kept in the machine's cache, the last 5 runs:
# CI's checkout is deleted after the run, and a run CI cut off printed no
# lane logs at all.
runs_dir=$(scripts/cache-dir.sh)/test-runs
run_dir=$runs_dir/$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$run_dir"
# shellcheck disable=SC2012  # the directory names are timestamps
ls -1d "$runs_dir"/*/ | head -n -5 | xargs -r rm -rf
lane_b_log=$run_dir/lane-b.log
lane_c_log=$run_dir/lane-c.log
exec 4>&1 > >(tee -a "$run_dir/lane-a.log") 2>&1
tee_pid=$!
echo "test-all: logs of this run in $run_dir"
# The machine's busy CPU time (all cores, the fleets' containers included), in
# USER_HZ ticks from /proc/stat: at the end, how much of the cores the run used.
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
busy0=$(busy_ticks)

# Every stage ends by the deadline (TEST_DEADLINE seconds after the start,
# 85 min): past it a stage is stopped and counted FAILED (timeout), so an
# overlong run still prints which stage ran long and its summary, inside CI's
# 90 min, instead of being cut off by CI with no summary at all.
TEST_DEADLINE=${TEST_DEADLINE:-5100}
# The lanes' logs are printed only when they end; each stage's result line
# also goes at once to the command's own output (fd 3), with the time since
# the start, so a partial run says how far each lane got.
exec 3>&1

stage() {
  local name=$1; shift
  local t0=$SECONDS rc=ok left=$((TEST_DEADLINE - SECONDS))
  echo
  echo "=== stage: $name"
  if [ "$left" -le 0 ]; then
    rc=FAILED; echo "=== $name not started: the run is past its deadline (TEST_DEADLINE=${TEST_DEADLINE}s)"
  else
    timeout --kill-after=30 "$left" "$@"
    case $? in
      0) ;;
      124|137) rc=FAILED; echo "=== $name stopped at the run's deadline (TEST_DEADLINE=${TEST_DEADLINE}s)" ;;
      *) rc=FAILED ;;
    esac
  fi
  printf '%-22s %-7s %5ss\n' "$name" "$rc" "$((SECONDS - t0))" >> "$results_file"
  printf '=== done: %-22s %-7s %5ss (at %ss)\n' "$name" "$rc" "$((SECONDS - t0))" "$SECONDS" >&3
  [ "$rc" = ok ]
}

lane() {
  local s
  for s in "$@"; do stage "molecule-$s" molecule test -s "$s"; done
}

# Lane C: the checks without a fleet, niced (the lanes' fleets come first).
checks_lane() {
  local v
  # One fleet scenario on the oldest core (issue 23): the adopt, rollout and
  # rollback playbooks under load. First and not niced, like the other fleets.
  if [ -n "$MATRIX_SCENARIO" ] && [ $# -gt 0 ]; then
    stage "core-${1}-molecule-$MATRIX_SCENARIO" scripts/matrix.sh molecule "$1" "$MATRIX_SCENARIO"
  fi
  stage unit nice -n 10 scripts/run-pytest.sh -q -n 2 tests/unit demoapp/tests
  stage sanity nice -n 10 scripts/sanity.sh
  stage ansible-lint nice -n 10 ansible-lint --profile production -q
  for v in "$@"; do
    stage "core-$v-unit" nice -n 10 scripts/matrix.sh unit "$v"
    stage "core-$v-sanity" nice -n 10 scripts/matrix.sh sanity "$v"
  done
  # shellcheck disable=SC2086
  [ -z "$LANE_C" ] || lane $LANE_C
}

stage host-packages scripts/ensure-host-packages.sh
stage docker scripts/ensure-docker.sh
stage build-install scripts/build-collection.sh
stage fleet-image scripts/build-images.sh

echo
echo "=== lane C in the background: unit, sanity, ansible-lint, ansible-core ${MATRIX_CORES:-(none)}${LANE_C:+, then $LANE_C} (output: $lane_c_log, printed below when done)"
# shellcheck disable=SC2086
checks_lane $MATRIX_CORES > "$lane_c_log" 2>&1 &
lane_c_pid=$!
lane_b_pid=""
if [ -n "$LANE_B" ]; then
  echo
  echo "=== lane B in the background: $LANE_B (output: $lane_b_log, printed below when done)"
  # shellcheck disable=SC2086  # word splitting of the scenario list is intended
  lane $LANE_B > "$lane_b_log" 2>&1 &
  lane_b_pid=$!
fi
# shellcheck disable=SC2086
lane $LANE_A
if [ -n "$lane_b_pid" ]; then
  wait "$lane_b_pid"
  echo
  echo "=== lane B output ($LANE_B)"
  cat "$lane_b_log"
fi
wait "$lane_c_pid"
echo
echo "=== lane C output (unit, sanity, ansible-lint, ansible-core ${MATRIX_CORES:-(none)}${LANE_C:+, then $LANE_C})"
cat "$lane_c_log"

echo
echo "=== summary"
cat "$results_file"
failed=$(grep -c ' FAILED ' "$results_file")
total=$(wc -l < "$results_file")
rm -f "$results_file"
echo "total ${SECONDS}s"
hz=$(getconf CLK_TCK) cores=$(nproc)
echo "machine cpu busy: $(( ($(busy_ticks) - busy0) / hz ))s of $((SECONDS * cores))s on $cores cores"
echo "stages: $((total - failed)) passed, $failed failed"
# Let tee print the last lines before the command exits. tee ends when every
# writer of its pipe has closed it: a daemon a stage started with the pipe
# still open would keep it alive for ever (stop 27: dockerd, started by the
# docker stage, held it, and CI cut the finished run off at 90 min). So wait
# 30 s at most, then name whoever holds it and go on.
exec 1>&4 2>&4 3>&-
for _ in $(seq 1 60); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$tee_pid" 2>/dev/null; then
  pipe=$(readlink "/proc/$tee_pid/fd/0")
  holders=""
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$tee_pid" ] && continue
    for fd in "$p"/fd/*; do
      if [ "$(readlink "$fd" 2>/dev/null)" = "$pipe" ]; then
        holders="$holders $(cat "$p/comm" 2>/dev/null) (pid ${p#/proc/})"
        break
      fi
    done
  done
  echo "test-all: WARNING: the run's output pipe is still held open by:${holders:- nobody found}; a stage left a process behind with the test command's output. Not waiting for it."
  kill "$tee_pid" 2>/dev/null
fi
[ "$failed" -eq 0 ]
