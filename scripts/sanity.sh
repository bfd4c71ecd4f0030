#!/usr/bin/env bash
# Run `ansible-test sanity` the way collection CIs do: on a copy of the
# collection placed at .../ansible_collections/grayrelease/canary.
#
# Two things stand between ansible-test and these machines, both fixed here
# without touching the user's own configuration (ansible-test's requirement
# venvs, minutes of pip per core, are kept in the machine's cache,
# scripts/cache-dir.sh, so a clean checkout reuses them):
# - it downloads a pip bootstrap script from a host that is unreachable: a
#   stand-in that uses ensurepip is put where ansible-test caches it;
# - it runs pip with a filtered environment that drops PIP_CERT and
#   SSL_CERT_FILE, so pip in its venvs fails TLS verification against the
#   index: the CA bundle goes into a pip config file instead, which pip reads
#   whatever the environment. Both live in a HOME of our own under .cache.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
sanity_home=$(scripts/cache-dir.sh)/sanity-home
mkdir -p "$sanity_home/.ansible/test/cache" "$sanity_home/.config/pip"
# (pip 23.1.2: ansible-test of ansible-core 2.16 and 2.17, the matrix venvs)
for v in 23_1_2 24_2 25_1 25_3; do
  cp scripts/sanity/get_pip_standin.py "$sanity_home/.ansible/test/cache/get_pip_$v.py"
done
ca=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}
{
  echo "[global]"
  echo "disable-pip-version-check = true"
  [ -n "$ca" ] && echo "cert = $ca"
} >"$sanity_home/.config/pip/pip.conf"

# A copy per run, so two runs at once do not pull the tree from under each other.
mkdir -p "$repo/.build"
work=$(mktemp -d "$repo/.build/sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/grayrelease/canary
mkdir -p "$dest"
# Only what git would ship: tracked files plus untracked ones not ignored.
git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ "$dest/"
cd "$dest"
# ansible-test lists files through git; without a repo of its own here it
# would ask the outer checkout, which ignores .build/, and find nothing.
git init -q && git add -A >/dev/null
pyver=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# One run at a time in the shared home: ansible-test builds its venvs there.
exec 9>"$sanity_home.lock"
flock 9
HOME=$sanity_home ansible-test sanity --color no --venv --python "$pyver" "$@"
