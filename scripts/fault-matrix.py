# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print the fault matrix recorded by the faults scenario (molecule/faults) as a table.

    scripts/fault-matrix.py [--run RUN_ID | --all] [.build/fault-matrix.jsonl]

One row per case of one run (the latest unless --run or --all): the outcome,
time to detect and time to restore in seconds (see molecule/faults/tests/
test_faults.py for where each clock starts), client requests that failed
(fast / slow) under the mixed load, and the most servers out of rotation on
any balancer against canary_max_unavailable. "-" is a figure that does not
apply (nothing to restore after a refusal).
"""
import argparse
import json
import os
import sys

DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".build", "fault-matrix.jsonl")
COLUMNS = ("case", "outcome", "detect s", "restore s", "failed fast/slow", "out max/allowed")


def read(path):
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise SystemExit("%s:%d: not JSON: %s" % (path, number, exc)) from exc
    return rows


def fig(value):
    return "-" if value is None else ("%g" % value if isinstance(value, float) else str(value))


def cells(row):
    failed = "-" if row.get("failed_fast") is None else "%s/%s" % (
        fig(row.get("failed_fast")), fig(row.get("failed_slow")))
    out = "-" if row.get("max_out") is None else "%s/%s" % (fig(row.get("max_out")), fig(row.get("allowed_out")))
    return (row.get("case", "?"), str(row.get("outcome") or row.get("decision") or "?"), fig(row.get("detect_s")),
            fig(row.get("restore_s")), failed, out)


def table(rows):
    lines = [COLUMNS] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=DEFAULT)
    ap.add_argument("--run", help="the run to show (the `run` field); default: the latest")
    ap.add_argument("--all", action="store_true", help="every recorded row")
    args = ap.parse_args(argv)
    if not os.path.exists(args.path):
        print("no fault matrix at %s: run `make fault-matrix` first" % args.path, file=sys.stderr)
        return 1
    rows = read(args.path)
    if not args.all:
        run = args.run or max((r.get("run", "") for r in rows), default="")
        rows = [r for r in rows if r.get("run", "") == run]
        print("run %s" % (run or "(unnamed)"))
    if not rows:
        print("no rows", file=sys.stderr)
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
