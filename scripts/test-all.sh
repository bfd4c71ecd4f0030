#!/usr/bin/env bash
# The one test command (`make test`): every stage runs even when an earlier one
# failed, so a single run shows everything that is wrong; the exit status is
# non-zero if any stage failed. Stage timings are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH=$PWD/.venv/bin:$PATH

SCENARIOS=${SCENARIOS:-"default balancer release rollout faults adopt judge"}
declare -a names=() results=() secs=()
failed=0

stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo
  echo "=== stage: $name"
  if "$@"; then results+=(ok); else results+=(FAILED); failed=$((failed + 1)); fi
  names+=("$name"); secs+=($((SECONDS - t0)))
}

stage host-packages scripts/ensure-host-packages.sh
stage docker scripts/ensure-docker.sh
stage unit scripts/run-pytest.sh -q tests/unit demoapp/tests
stage sanity scripts/sanity.sh
stage ansible-lint ansible-lint --profile production -q
stage build-install scripts/build-collection.sh
stage fleet-image scripts/build-images.sh
for s in $SCENARIOS; do
  stage "molecule-$s" molecule test -s "$s"
done

echo
echo "=== summary"
for i in "${!names[@]}"; do
  printf '%-22s %-7s %5ss\n' "${names[$i]}" "${results[$i]}" "${secs[$i]}"
done
echo "total ${SECONDS}s"
echo "stages: $(( ${#names[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
