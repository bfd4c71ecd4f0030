#!/usr/bin/env bash
# Create (or refresh) the project's venv; the stamp names the recipe hash so an
# unchanged recipe never reinstalls.
set -euo pipefail
venv=$1 stamp=$2
cd "$(dirname "$0")/.."
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r requirements-test.txt
rm -f "$venv"/.recipe-*
touch "$stamp"
