#!/usr/bin/env bash
# Package the demo app as a release archive: dist/demoapp-VERSION.tar.gz with a
# single top-level directory demoapp-VERSION/ holding app.py and release.json.
# Fault knobs are baked into release.json here, never toggled at run time.
#   scripts/build-release.sh VERSION [--crash-on-start] [--crash-on-hosts H1,H2] [--healthz-fail]
#       [--error-rate F [--errors-on-hosts H1,H2]] [--latency-ms N] [--start-delay S] [--healthz-trickle S]
#       [--out DIR]
# Same inputs -> byte-identical archive (fixed mtime and owner, sorted, gzip -n).
set -euo pipefail
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "build-release: $*" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || usage
version=$1; shift
[[ $version =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] \
  || die "bad VERSION '$version': use letters, digits and . _ + - (it becomes a directory name)"
crash=false crash_hosts="" error_hosts="" healthz=false rate=0 latency=0 delay=0 trickle=0 out=$repo/dist
num='^[0-9]+([.][0-9]+)?$'
while [ $# -gt 0 ]; do
  case $1 in
    --crash-on-start) crash=true ;;
    --crash-on-hosts) [ $# -ge 2 ] || die "--crash-on-hosts needs host names"
      [[ $2 =~ ^[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*$ ]] || die "bad --crash-on-hosts '$2': comma-separated host names"
      crash_hosts=$2; shift ;;
    --errors-on-hosts) [ $# -ge 2 ] || die "--errors-on-hosts needs host names"
      [[ $2 =~ ^[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*$ ]] || die "bad --errors-on-hosts '$2': comma-separated host names"
      error_hosts=$2; shift ;;
    --healthz-fail) healthz=true ;;
    --error-rate) [ $# -ge 2 ] || die "--error-rate needs a value"
      if ! [[ $2 =~ $num ]] || ! awk -v r="$2" 'BEGIN{exit !(r <= 1)}'; then
        die "bad --error-rate '$2': a share between 0 and 1"
      fi
      rate=$2; shift ;;
    --latency-ms) [ $# -ge 2 ] || die "--latency-ms needs a value"
      [[ $2 =~ ^[0-9]+$ ]] || die "bad --latency-ms '$2': whole milliseconds >= 0"
      latency=$2; shift ;;
    --start-delay) [ $# -ge 2 ] || die "--start-delay needs a value"
      [[ $2 =~ $num ]] || die "bad --start-delay '$2': seconds >= 0"
      delay=$2; shift ;;
    --healthz-trickle) [ $# -ge 2 ] || die "--healthz-trickle needs a value"
      [[ $2 =~ $num ]] || die "bad --healthz-trickle '$2': seconds >= 0"
      trickle=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
top=demoapp-$version
mkdir "$stage/$top"
install -m 0755 "$repo/demoapp/app.py" "$stage/$top/app.py"
python3 - "$stage/$top/release.json" "$version" "$crash" "$crash_hosts" "$healthz" "$rate" "$latency" "$delay" "$trickle" \
  "$error_hosts" <<'PY'
import json, sys
path, version, crash, crash_hosts, healthz, rate, latency, delay, trickle, error_hosts = sys.argv[1:]
release = {
    "version": version,
    "crash_on_start": crash == "true",
    "crash_on_hosts": [h for h in crash_hosts.split(",") if h],
    "healthz_fail": healthz == "true",
    "error_rate": float(rate),
    "latency_ms": int(latency),
    "errors_on_hosts": [h for h in error_hosts.split(",") if h],
    "start_delay_s": float(delay),
    "healthz_trickle_s": float(trickle),
}
with open(path, "w", encoding="utf-8") as handle:
    json.dump(release, handle, indent=2, sort_keys=True)
    handle.write("\n")
PY
chmod 0644 "$stage/$top/release.json"
chmod 0755 "$stage/$top"
archive=$out/$top.tar.gz
tar -C "$stage" --sort=name --mtime=@1704067200 --owner=0 --group=0 --numeric-owner \
    --format=gnu -cf - "$top" | gzip -9n > "$archive.tmp"
mv "$archive.tmp" "$archive"
echo "$archive"
