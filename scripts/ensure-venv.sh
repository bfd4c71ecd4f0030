#!/usr/bin/env bash
# ensure-venv.sh VENV STAMP: the project's venv at VENV (.venv), a link to a
# venv in the machine's cache (scripts/cache-dir.sh) named for the recipe's
# hash, which STAMP (VENV/.recipe-HASH) carries: an unchanged recipe never
# reinstalls, and a clean checkout on a machine that built it before (CI's)
# reuses it.
set -euo pipefail
venv=$1 stamp=$2
cd "$(dirname "$0")/.."
hash=${stamp##*/.recipe-}
cached=$(scripts/cache-dir.sh)/venv-main-$hash
exec 9>"$cached.lock"
flock 9   # two checkouts at once build it once
if [ ! -e "$cached/.recipe-$hash" ]; then
  echo "ensure-venv: building $cached" >&2
  rm -rf "$cached"   # half-built by a run that was killed: start again
  python3 -m venv "$cached"
  "$cached/bin/pip" install -q --upgrade pip
  "$cached/bin/pip" install -q -r requirements-test.txt
  touch "$cached/.recipe-$hash"
fi
if [ -d "$venv" ] && [ ! -L "$venv" ]; then rm -rf "$venv"; fi   # a venv of the earlier layout
ln -sfn "$cached" "$venv"
