# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded load of many distinct users, each keeping its cookies (stdlib only).

Runs inside the balancer container against its own HAProxy (loopback). The
users come from --users (a JSON list of {"id", "cookie" (the user key or
null: a keyless client), "headers", "src" (a loopback source address)});
the cookies HAProxy sets are kept in --jar between runs. Every user sends
--requests requests, interleaved with the others, over --workers keep-alive
connections. Stops after that, at --duration seconds, or when --stop-file
appears. Writes to --out: per user the versions (X-Demoapp-Version) and routes
(X-Gray-Route) it saw, with counts, the routes of its failed responses ("fr"),
and totals.

    python3 users_load.py --users /tmp/users.json --jar /tmp/jar.json --requests 2 --out /tmp/round.json
"""

import argparse
import http.client
import json
import os
import threading
import time


def parse_set_cookie(value, name):
    first = (value or "").split(";", 1)[0].strip()
    key, sep, val = first.partition("=")
    return val if sep and key.strip() == name else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", required=True)
    ap.add_argument("--jar", required=True)
    ap.add_argument("--cookie-name", default="uid")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", default="/version")
    ap.add_argument("--requests", type=int, default=2, help="requests per user")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=120.0, help="hard stop, seconds")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between two requests of a worker")
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.users, encoding="utf-8") as handle:
        users = json.load(handle)
    jar = {}
    if os.path.exists(args.jar):
        with open(args.jar, encoding="utf-8") as handle:
            jar = json.load(handle)
    for user in users:
        if user.get("cookie") and user["id"] not in jar:
            jar[user["id"]] = user["cookie"]
    seen = dict((u["id"], {"v": {}, "r": {}, "failed": 0}) for u in users)
    lock = threading.Lock()
    totals = {"requests": 0, "failed": 0, "retried": 0, "errors": {}}
    t0 = time.monotonic()
    deadline = t0 + args.duration

    def stopped():
        return time.monotonic() > deadline or (args.stop_file and os.path.exists(args.stop_file))

    def worker(shard):
        conns = {}
        for _round in range(args.requests):
            for user in shard:
                if stopped():
                    return
                headers = dict(user.get("headers") or {})
                if jar.get(user["id"]):
                    headers["Cookie"] = "%s=%s" % (args.cookie_name, jar[user["id"]])
                src = user.get("src") or "127.0.0.1"
                status = None
                for attempt in range(2):
                    conn = conns.get(src)
                    if conn is None:
                        conn = conns[src] = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5,
                                                                       source_address=(src, 0))
                    try:
                        conn.request("GET", args.path, headers=headers)
                        resp = conn.getresponse()
                        resp.read()
                        status = resp.status
                        break
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        conns.pop(src, None)
                        status = type(exc).__name__
                        if attempt == 0:
                            # A keep-alive connection closed by a reloading HAProxy: a browser retries an
                            # idempotent GET on a new connection, so does this client (counted).
                            with lock:
                                totals["retried"] += 1
                with lock:
                    totals["requests"] += 1
                    mine = seen[user["id"]]
                    if status == 200:
                        version = resp.getheader("X-Demoapp-Version", "?")
                        route = resp.getheader("X-Gray-Route", "-")
                        mine["v"][version] = mine["v"].get(version, 0) + 1
                        mine["r"][route] = mine["r"].get(route, 0) + 1
                        given = parse_set_cookie(resp.getheader("Set-Cookie"), args.cookie_name)
                        if given:
                            jar[user["id"]] = given
                    else:
                        mine["failed"] += 1
                        if isinstance(status, int):
                            # Where the failed request was routed (a canary's own 5xx, or not).
                            route = resp.getheader("X-Gray-Route", "-")
                            mine.setdefault("fr", {})[route] = mine.setdefault("fr", {}).get(route, 0) + 1
                        totals["failed"] += 1
                        totals["errors"][str(status)] = totals["errors"].get(str(status), 0) + 1
                if args.pause:
                    time.sleep(args.pause)
        for conn in conns.values():
            conn.close()

    shards = [users[i::args.workers] for i in range(args.workers)]
    threads = [threading.Thread(target=worker, args=(shard,), daemon=True) for shard in shards if shard]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 10)
    totals["seconds"] = round(time.monotonic() - t0, 2)
    for user_id, mine in seen.items():
        mine["key"] = jar.get(user_id)
    with open(args.jar + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(jar, handle)
    os.replace(args.jar + ".tmp", args.jar)
    summary = dict(totals, users=seen)
    with open(args.out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
