#!/usr/bin/env bash
# cache-dir.sh: prints (and creates) the machine's cache of what is expensive
# to build and depends only on a recipe: the venvs (each under its recipe's
# hash) and ansible-test's requirement venvs. It lives outside the checkout,
# so a clean checkout on the same machine (CI's) starts from it instead of
# ten minutes of pip; a recipe that changes gets a venv of its own, and
# GRAYRELEASE_CACHE=/some/dir moves it.
set -euo pipefail
dir=${GRAYRELEASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/grayrelease-canary}
mkdir -p "$dir"
echo "$dir"
