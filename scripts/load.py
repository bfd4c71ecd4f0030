"""Bounded HTTP load client for the local fleet (stdlib only).

Runs inside a balancer container against its own HAProxy (loopback), so the
load never leaves the test's own containers. Stops at --duration seconds,
--max-requests requests, or when --stop-file appears, whichever is first,
then prints one JSON summary: requests, failed, per-status and per-version
counts, latency percentiles.

    python3 load.py --url http://127.0.0.1/ --rate 40 --duration 300 --stop-file /tmp/load.stop
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1/")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second (all workers)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=float, default=300.0, help="hard stop, seconds")
    ap.add_argument("--max-requests", type=int, default=50000, help="hard stop, requests")
    ap.add_argument("--stop-file", default="", help="stop as soon as this file exists")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", default="", help="also write the summary here")
    args = ap.parse_args(argv)
    if args.stop_file and os.path.exists(args.stop_file):
        os.unlink(args.stop_file)

    lock = threading.Lock()
    stats = {"requests": 0, "failed": 0, "statuses": {}, "versions": {}, "errors": {}}
    latencies = []
    start = time.monotonic()
    deadline = start + args.duration
    gap = args.workers / args.rate
    stop = threading.Event()

    def worker(offset):
        next_at = start + offset
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if next_at > now:
                time.sleep(min(next_at - now, 0.5))
                continue
            next_at += gap
            with lock:
                if stats["requests"] >= args.max_requests:
                    stop.set()
                    return
                stats["requests"] += 1
            t0 = time.monotonic()
            status, version, error = None, None, None
            try:
                with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
                    status = resp.status
                    resp.read(4096)
                    version = resp.headers.get("X-Demoapp-Version", "?")
            except urllib.error.HTTPError as exc:
                status = exc.code
                version = exc.headers.get("X-Demoapp-Version", "?") if exc.headers else "?"
            except Exception as exc:  # every failure is counted, never fatal
                error = type(exc).__name__
            ms = (time.monotonic() - t0) * 1000.0
            with lock:
                latencies.append(ms)
                key = str(status) if status is not None else "-"
                stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
                if status is None or status >= 500:
                    stats["failed"] += 1
                if error:
                    stats["errors"][error] = stats["errors"].get(error, 0) + 1
                if version:
                    stats["versions"][version] = stats["versions"].get(version, 0) + 1

    threads = [threading.Thread(target=worker, args=(i * gap / args.workers,), daemon=True) for i in range(args.workers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if args.stop_file and os.path.exists(args.stop_file):
            stop.set()
        time.sleep(0.2)
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

    stats["seconds"] = round(time.monotonic() - start, 1)
    stats["latency_ms"] = {"p50": pct(0.5), "p95": pct(0.95), "max": round(latencies[-1], 1) if latencies else None}
    text = json.dumps(stats, sort_keys=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
