"""Bounded HTTP load client for the local fleet (stdlib only).

Runs inside a balancer container against its own HAProxy (loopback), so the
load never leaves the test's own containers. Stops at --duration seconds,
--max-requests requests, or when --stop-file appears, whichever is first,
then prints one JSON summary: requests, failed, per-status and per-version
counts, latency percentiles (of the fast requests, as without slow load), plus
`fast` and `slow` sub-summaries (requests, failed, statuses, errors).

Mixed load: --slow-url with --slow-rate R > 0 also sends R slow requests per
second (e.g. the demo app's /slow?seconds=6; every 1/R s, or at random with
--slow-arrivals poisson), each in its own thread, at most
--slow-max-concurrency at a time (a slot that is busy skips the tick and counts
it under `slow.skipped`), each with a timeout of --slow-seconds + 10 s. Slow
requests count toward --max-requests; a stop waits for those in flight.

    python3 load.py --url http://127.0.0.1/ --rate 40 --duration 300 --stop-file /tmp/load.stop
    python3 load.py --rate 20 --slow-url 'http://127.0.0.1/slow?seconds=6' --slow-rate 1 --slow-seconds 6
"""

import argparse
import json
import os
import random
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
    ap.add_argument("--slow-url", default="", help="URL of the slow requests (mixed load)")
    ap.add_argument("--slow-rate", type=float, default=0.0, help="slow requests per second, 0 = off")
    ap.add_argument("--slow-seconds", type=float, default=6.0,
                    help="how long a slow request takes server-side (its timeout is this + 10 s)")
    ap.add_argument("--slow-max-concurrency", type=int, default=50)
    ap.add_argument("--slow-arrivals", choices=("periodic", "poisson"), default="periodic",
                    help="slow requests every 1/rate s, or at random (exponential gaps of mean 1/rate s): "
                         "periodic ones behind a roundrobin balancer visit the servers in a fixed rotation")
    ap.add_argument("--seed", type=int, default=None, help="seed of the poisson arrivals")
    args = ap.parse_args(argv)
    if args.slow_rate > 0 and not args.slow_url:
        ap.error("--slow-rate needs --slow-url")
    if args.stop_file and os.path.exists(args.stop_file):
        os.unlink(args.stop_file)

    lock = threading.Lock()
    stats = {"requests": 0, "failed": 0, "statuses": {}, "versions": {}, "errors": {},
             "fast": {"requests": 0, "failed": 0, "statuses": {}, "errors": {}},
             "slow": {"requests": 0, "failed": 0, "statuses": {}, "skipped": 0, "errors": {}}}
    latencies = []
    start = time.monotonic()
    deadline = start + args.duration
    gap = args.workers / args.rate
    stop = threading.Event()

    def fetch(url, timeout, kind):
        t0 = time.monotonic()
        status, version, error = None, None, None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
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
            if kind == "fast":
                latencies.append(ms)
            else:
                stats["slow"]["max_ms"] = round(max(stats["slow"].get("max_ms", 0.0), ms), 1)
            key = str(status) if status is not None else "-"
            sub = stats[kind]
            stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
            sub["statuses"][key] = sub["statuses"].get(key, 0) + 1
            if status is None or status >= 500:
                stats["failed"] += 1
                sub["failed"] += 1
            if error:
                stats["errors"][error] = stats["errors"].get(error, 0) + 1
                sub["errors"][error] = sub["errors"].get(error, 0) + 1
            if version:
                stats["versions"][version] = stats["versions"].get(version, 0) + 1

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
                stats["fast"]["requests"] += 1
            fetch(args.url, args.timeout, "fast")

    slow_slots = threading.BoundedSemaphore(max(1, args.slow_max_concurrency))

    def slow_one():
        try:
            fetch(args.slow_url, args.slow_seconds + 10.0, "slow")
        finally:
            slow_slots.release()

    def slow_dispatcher():
        # One tick per 1/slow-rate s (on average, with poisson arrivals);
        # each slow request runs in its own thread.
        slow_gap = 1.0 / args.slow_rate
        arrivals = random.Random(args.seed)
        next_at = start
        inflight = []
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if next_at > now:
                time.sleep(min(next_at - now, 0.2))
                continue
            next_at += arrivals.expovariate(args.slow_rate) if args.slow_arrivals == "poisson" else slow_gap
            if not slow_slots.acquire(blocking=False):
                with lock:
                    stats["slow"]["skipped"] += 1
                continue
            with lock:
                if stats["requests"] >= args.max_requests:
                    slow_slots.release()
                    stop.set()
                    break
                stats["requests"] += 1
                stats["slow"]["requests"] += 1
            thread = threading.Thread(target=slow_one, daemon=True)
            thread.start()
            inflight = [t for t in inflight if t.is_alive()] + [thread]
        # Requests already sent finish (each bounded by its own timeout).
        for thread in inflight:
            thread.join(timeout=max(0.0, args.slow_seconds + 15.0))

    threads = [threading.Thread(target=worker, args=(i * gap / args.workers,), daemon=True) for i in range(args.workers)]
    if args.slow_rate > 0:
        threads.append(threading.Thread(target=slow_dispatcher, daemon=True))
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
