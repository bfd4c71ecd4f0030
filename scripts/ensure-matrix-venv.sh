#!/usr/bin/env bash
# ensure-matrix-venv.sh VERSION: the venv of one ansible-core version of the
# test matrix, from tests/matrix/core-VERSION.txt. Like ensure-venv.sh it lives
# in the machine's cache (scripts/cache-dir.sh) under the recipe's hash (that
# file, tests/matrix/common.txt, requirements.txt), so a fresh checkout on a
# machine that built it before (CI's clean checkout) reuses it and an unchanged
# recipe never reinstalls; .cache/venv-core-VERSION links to it. Prints the
# venv's path. Python 3.11 by default (MATRIX_PYTHON): a controller Python every
# core of the range (2.16 to 2.19) supports.
set -euo pipefail
ver=$1
cd "$(dirname "$0")/.."
recipe=tests/matrix/core-$ver.txt
if [ ! -f "$recipe" ]; then
  echo "ensure-matrix-venv: no recipe $recipe" >&2
  exit 2
fi
hash=$(cat requirements.txt tests/matrix/common.txt "$recipe" | sha256sum | cut -c1-12)
venv=$(scripts/cache-dir.sh)/venv-core-$ver-$hash
stamp=$venv/.recipe-$hash
mkdir -p .cache
exec 9>"$venv.lock"
flock 9   # two runs at once build it once
if [ ! -e "$stamp" ]; then
  echo "ensure-matrix-venv: building $venv ($recipe)" >&2
  rm -rf "$venv"   # half-built by a run that was killed: start again
  "${MATRIX_PYTHON:-python3.11}" -m venv "$venv"
  log=$venv.pip.log
  if ! { "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -r "$recipe"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -20 >&2
    echo "ensure-matrix-venv: pip failed, whole output in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
link=.cache/venv-core-$ver
if [ -d "$link" ] && [ ! -L "$link" ]; then rm -rf "$link"; fi   # a venv of the earlier layout
ln -sfn "$venv" "$link"
# A venv named for a core must carry that core.
got=$("$venv/bin/python" -c 'from ansible.release import __version__ as v; print(".".join(v.split(".")[:2]))')
if [ "$got" != "$ver" ]; then
  echo "ensure-matrix-venv: $venv has ansible-core $got, not $ver" >&2
  exit 1
fi
echo "$venv"
