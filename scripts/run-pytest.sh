#!/usr/bin/env bash
# pytest with the collection importable as ansible_collections.grayrelease.canary.
# Exit 5 ("no tests collected") is a failure here: a green run must have run tests.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
python -m pytest -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run-pytest: no tests were collected from: $*" >&2
  exit 1
fi
exit $rc
