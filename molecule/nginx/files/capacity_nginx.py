# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Servers out of rotation on one nginx balancer, sampled every --interval from the
collection's upstream file (a server is out when its line carries `down`), bounded by
--duration; writes a JSON summary (samples, max_out, max_out_servers, max_out_at) to
--out when --stop-file appears or the duration ends. Runs inside the balancer."""
import argparse
import json
import os
import re
import time

LINE = re.compile(r"^\s*server\s+(\S+)([^;]*);.*name=(\S+)")


def out_of_rotation(path):
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = LINE.match(line)
            if match and re.search(r"\bdown\b", match.group(2)):
                out.append(match.group(3))
    return sorted(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", default="/etc/nginx/grayrelease/demoapp.conf")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    summary = {"samples": 0, "errors": 0, "max_out": 0, "max_out_servers": [], "max_out_at": None}
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        try:
            out = out_of_rotation(args.file)
        except OSError:
            summary["errors"] += 1
            out = []
        summary["samples"] += 1
        if len(out) > summary["max_out"]:
            summary.update(max_out=len(out), max_out_servers=out, max_out_at=round(time.monotonic() - start, 2))
        try:
            open(args.stop_file).close()
            break
        except OSError:
            pass
        time.sleep(args.interval)
    with open(args.out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
    os.rename(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
