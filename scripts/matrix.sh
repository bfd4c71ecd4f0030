#!/usr/bin/env bash
# matrix.sh WHAT VERSION [ARGS...]: one cell of the ansible-core matrix, run in the venv
# of that core (scripts/ensure-matrix-venv.sh, .cache/venv-core-VERSION):
#   unit    the unit tests that go through ansible-core (the tests' ansible,
#           ansible-playbook and ansible-doc are that venv's); left out are
#           those that cannot differ from one core to another: the
#           module_utils tests (module_utils import nothing of ansible, see
#           tests/unit/plugins/module_utils/test_no_ansible_imports.py),
#           scripts/, docs/ (pages checked against module_utils) and the
#           demo app's, which the unit stage runs on 2.19.
#           The slow ones (real HAProxy, whole playbooks: 35 tests, ~140 s
#           of the ~225 s) run on the oldest core (MATRIX_FULL, 2.16) and
#           2.19; the cores between run the rest (~85 s each)
#   sanity  that core's `ansible-test sanity`, with its own rules and
#           tests/sanity/ignore-VERSION.txt; every test but pylint, which
#           runs in 2.19's sanity stage only (MATRIX_PYLINT=2.16 adds it on
#           that core): alone, 2.16's sanity took 163 s of CPU with pylint
#           and 2.17's 42 s without (session 14), and make test's CPU work
#           is what bounds its time
#   molecule SCENARIO: `molecule test -s SCENARIO` with that venv's
#           ansible-playbook (only the 2.16 venv carries molecule; make
#           matrix-scenario)
# 2.19, the main venv's core, is the unit and sanity stages of make test.
set -euo pipefail
what=${1:?unit, sanity or molecule} ver=${2:?an ansible-core version, e.g. 2.16}
shift 2   # the rest goes to pytest or ansible-test sanity
cd "$(dirname "$0")/.."
venv=$(scripts/ensure-matrix-venv.sh "$ver")
export PATH=$venv/bin:$PATH
echo "matrix: $what on ansible-core $(python -c "from ansible.release import __version__ as v; print(v)") ($venv)"
case $what in
  unit)
    if [ "$ver" != "${MATRIX_FULL:-2.16}" ]; then set -- -m "not slow" "$@"; fi
    exec scripts/run-pytest.sh -q -n "${MATRIX_WORKERS:-2}" \
         --ignore=tests/unit/plugins/module_utils --ignore=tests/unit/scripts --ignore=tests/unit/docs \
         "$@" tests/unit ;;
  sanity)
    if [ "$ver" != "${MATRIX_PYLINT:-}" ]; then set -- --skip-test pylint "$@"; fi
    exec scripts/sanity.sh "$@" ;;
  # The fleet on the oldest core with ansible.builtin.linear, the strategy a
  # user gets by default (the other scenarios use grayrelease.canary.linear).
  molecule) GRAYRELEASE_TEST_STRATEGY=ansible.builtin.linear exec molecule test -s "${1:?a scenario}" ;;
  *) echo "matrix.sh: unit, sanity or molecule, not $what" >&2; exit 2 ;;
esac
