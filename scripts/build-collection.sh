#!/usr/bin/env bash
# Build the collection tarball and prove it installs and its plugins load from
# the installed copy (not from the work tree).
#   scripts/build-collection.sh               the tarball in dist/collection/
#   scripts/build-collection.sh --out DIR     the tarball in DIR (emptied first), e.g. a test's own directory
set -euo pipefail
out=dist/collection
if [ "${1:-}" = "--out" ] && [ -n "${2:-}" ]; then out=$2; fi
cd "$(dirname "$0")/.."
rm -rf "$out" && mkdir -p "$out"
ansible-galaxy collection build --force --output-path "$out" . >/dev/null
tarball=$(ls "$out"/grayrelease-canary-*.tar.gz)
echo "build-collection: built $tarball ($(du -h "$tarball" | cut -f1))"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# With the work tree on ANSIBLE_COLLECTIONS_PATH, ansible-galaxy would call the
# collection installed already and skip it: install with only the temp path.
ANSIBLE_COLLECTIONS_PATH=$tmp ansible-galaxy collection install --offline --force -p "$tmp" "$tarball" >/dev/null
installed=$tmp/ansible_collections/grayrelease/canary
test -f "$installed/MANIFEST.json"
# Plugins must load from the installed copy only.
plugins=$(ANSIBLE_COLLECTIONS_PATH=$tmp ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false PYTHONPATH='' \
  ansible-doc -l grayrelease.canary 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
filters=$(ANSIBLE_COLLECTIONS_PATH=$tmp ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false PYTHONPATH='' \
  ansible-doc -t filter -l grayrelease.canary 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
echo "build-collection: installed modules: $plugins"
echo "build-collection: installed filters: $filters"
for m in haproxy_server haproxy_info health_check canary_judge rollout_lock; do
  case " $plugins " in *" grayrelease.canary.$m "*) ;; *) echo "build-collection: module $m missing from the installed collection" >&2; exit 1;; esac
done
case " $filters " in *" grayrelease.canary.rollout_plan "*) ;; *) echo "build-collection: filter rollout_plan missing" >&2; exit 1;; esac
for r in release balancer verify rollback; do
  test -f "$installed/roles/$r/tasks/main.yml" || { echo "build-collection: role $r missing" >&2; exit 1; }
done
for p in rollout rollback status adopt; do
  test -f "$installed/playbooks/$p.yml" || { echo "build-collection: playbook $p missing" >&2; exit 1; }
done
for p in rollout rollback status adopt; do
  ANSIBLE_COLLECTIONS_PATH=$tmp ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false PYTHONPATH='' \
    ansible-playbook --syntax-check -i localhost, "grayrelease.canary.$p" >/dev/null \
    || { echo "build-collection: playbook grayrelease.canary.$p does not load from the installed copy" >&2; exit 1; }
done
echo "build-collection: OK"
