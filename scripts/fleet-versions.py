# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Show which demoapp versions each balancer of the local fleet serves.

  scripts/fleet-versions.sh [--requests N] [--path /version] [BALANCER ...]

Sends N requests (default 12) from inside each balancer container to its own
HAProxy frontend (127.0.0.1:80) and prints the count per version, e.g.
  lb1: v1=12
  lb2: v1=9 v2=3 errors=0
Failed requests count as errors (shown when there are any). Exit 1 when a
balancer cannot be reached at all or answered nothing but errors.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys

# One `docker exec` per balancer: the loop runs inside it, so N requests cost
# one process start instead of N. Each line: HTTP code, tab, body.
LOOP = r'''
i=0
while [ "$i" -lt "$1" ]; do
  i=$((i + 1))
  out=$(curl -sS -m 5 -o /tmp/.fleet-versions -w '%{http_code}' "http://127.0.0.1:80$2" 2>/dev/null) || out=000
  printf '%s\t%s\n' "$out" "$(tr -d '\n' < /tmp/.fleet-versions 2>/dev/null)"
done
rm -f /tmp/.fleet-versions
'''


def versions_through(balancer, requests, path):
    proc = subprocess.run(
        ["docker", "exec", balancer, "sh", "-c", LOOP, "fleet-versions", str(requests), path],
        capture_output=True, text=True, timeout=30 + 6 * requests, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or "docker exec exited %d" % proc.returncode)
    counts = collections.Counter()
    for line in proc.stdout.splitlines():
        code, _tab, body = line.partition("\t")
        version = None
        if code == "200":
            try:
                version = json.loads(body).get("version")
            except ValueError:
                version = None
        counts[version if isinstance(version, str) else "errors"] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("balancers", nargs="*", default=["lb1", "lb2"])
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--path", default="/version", help="must answer JSON with a 'version' key")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1000:
        parser.error("--requests must be 1..1000, got %d" % args.requests)
    ok = True
    for balancer in args.balancers:
        try:
            counts = versions_through(balancer, args.requests, args.path)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            print("%s: unreachable (%s)" % (balancer, exc))
            ok = False
            continue
        errors = counts.pop("errors", 0)
        parts = ["%s=%d" % (version, counts[version]) for version in sorted(counts)]
        if errors or not parts:
            parts.append("errors=%d" % errors)
        ok = ok and bool(counts)
        print("%s: %s" % (balancer, " ".join(parts)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
