# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Demo service that the local test fleet deploys (stdlib only).

Modelled on a Flask "hello" app:
  GET /         does a little work (hashing) and names its version
  GET /healthz  200 "ok" (500 when the release was built with healthz_fail;
                with healthz_trickle_s a 200 whose body trickles in a byte
                every 0.5 s for that long)
  GET /version  {"version": ..., "host": ...}
  GET /metrics  Prometheus text format: demoapp_requests_total{handler,code}
                and the demoapp_request_duration_seconds{handler} histogram
  GET /slow?seconds=N  sleeps N s (float, default 6, capped at 30), then
                answers 200 like / (a long request that only a real drain
                lets finish: SIGTERM cuts in-flight requests)

The version and the fault knobs come from release.json next to this file,
written by scripts/build-release.sh. They are fixed per release on purpose:
a fault is a property of the build being rolled out, so a canary rollout must
catch it, and nobody can "fix" a bad release at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULTS = {
    "version": None,
    "crash_on_start": False,
    # Host names on which this release crashes at start: a fault that shows
    # only in a later batch of a rollout, not on the canary.
    "crash_on_hosts": [],
    "healthz_fail": False,
    "error_rate": 0.0,
    # Host names on which error_rate applies (empty: on every host): a fault
    # that shows only on some hosts' data, in a later step of a rollout.
    "errors_on_hosts": [],
    "latency_ms": 0,
    "start_delay_s": 0.0,
    # Seconds over which GET /healthz trickles its body: a health endpoint
    # that keeps the connection busy without answering, which only an
    # overall deadline ends (a per-read timeout never fires).
    "healthz_trickle_s": 0.0,
}

TRICKLE_EVERY_S = 0.5

# Rounds of sha256 per GET /: a few milliseconds of CPU, so latency has a real
# (small) baseline that a canary judge can compare.
WORK_ROUNDS = 2000

SLOW_DEFAULT_S = 6.0
SLOW_MAX_S = 30.0


def slow_seconds(query):
    """Seconds that GET /slow sleeps: ?seconds=N (float), default 6, 0..30."""
    value = SLOW_DEFAULT_S
    for part in query.split("&"):
        key, _sep, raw = part.partition("=")
        if key == "seconds" and raw:
            try:
                value = float(raw)
            except ValueError:
                return None
    if math.isnan(value):
        return None
    return min(max(value, 0.0), SLOW_MAX_S)


def load_release(path):
    """Read and validate release.json; a bad file stops the app at start."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError("%s: expected a JSON object" % path)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ValueError("%s: unknown keys %s" % (path, ", ".join(unknown)))
    release = dict(DEFAULTS)
    release.update(data)
    if not isinstance(release["version"], str) or not release["version"]:
        raise ValueError("%s: 'version' must be a non-empty string, got %r" % (path, release["version"]))
    rate = release["error_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError("%s: 'error_rate' must be a number in 0..1, got %r" % (path, rate))
    for key in ("latency_ms", "start_delay_s", "healthz_trickle_s"):
        value = release[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("%s: %r must be a number >= 0, got %r" % (path, key, value))
    for key in ("crash_on_start", "healthz_fail"):
        if not isinstance(release[key], bool):
            raise ValueError("%s: %r must be true or false, got %r" % (path, key, release[key]))
    for key in ("crash_on_hosts", "errors_on_hosts"):
        hosts = release[key]
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise ValueError("%s: %r must be a list of host names, got %r" % (path, key, hosts))
    return release


class ErrorSchedule:
    """Decides which requests fail so that exactly `rate` of them do.

    Request n (1-based) fails when floor(n * rate) grows, which spreads the
    failures evenly (rate 0.2 fails every 5th request): any window of requests
    shows the configured share, without randomness that could make a short
    canary analysis see no errors at all.
    """

    def __init__(self, rate):
        self.rate = float(rate)
        self.count = 0
        self.lock = threading.Lock()

    def next_fails(self):
        with self.lock:
            self.count += 1
            n = self.count
        return int(n * self.rate) > int((n - 1) * self.rate)


# Latency histogram buckets (seconds): from the ~2 ms of GET / up to a few
# seconds, fine enough below 50 ms for a median to move visibly.
BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Label values of `handler`: the known paths; anything else is "other", so a
# scan of random URLs cannot grow the series without bound.
HANDLERS = ("/", "/slow", "/healthz", "/version")


class Metrics:
    """Request counters and latency histograms for GET /metrics.

    Thread-safe; renders the Prometheus text exposition format (0.0.4), the
    counters a canary judge on Prometheus compares between versions.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.durations = {}

    def observe(self, path, code, seconds):
        handler = path if path in HANDLERS else "other"
        with self.lock:
            self.requests[(handler, str(code))] = self.requests.get((handler, str(code)), 0) + 1
            hist = self.durations.setdefault(handler, {"buckets": [0] * len(BUCKETS), "sum": 0.0, "count": 0})
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist["buckets"][index] += 1
            hist["sum"] += seconds
            hist["count"] += 1

    def render(self):
        lines = ["# HELP demoapp_requests_total Requests answered, by handler and HTTP status code.",
                 "# TYPE demoapp_requests_total counter"]
        with self.lock:
            for (handler, code), count in sorted(self.requests.items()):
                lines.append('demoapp_requests_total{handler="%s",code="%s"} %d' % (handler, code, count))
            lines += ["# HELP demoapp_request_duration_seconds Time from request to response sent, by handler.",
                      "# TYPE demoapp_request_duration_seconds histogram"]
            for handler, hist in sorted(self.durations.items()):
                for bound, count in zip(BUCKETS, hist["buckets"]):
                    lines.append('demoapp_request_duration_seconds_bucket{handler="%s",le="%r"} %d'
                                 % (handler, bound, count))
                lines.append('demoapp_request_duration_seconds_bucket{handler="%s",le="+Inf"} %d'
                             % (handler, hist["count"]))
                lines.append('demoapp_request_duration_seconds_sum{handler="%s"} %r' % (handler, hist["sum"]))
                lines.append('demoapp_request_duration_seconds_count{handler="%s"} %d' % (handler, hist["count"]))
        return "\n".join(lines) + "\n"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # HAProxy's health checks reset their connection after each reply;
        # a traceback per check would bury real errors in the journal.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_handler(release, schedule, metrics=None):
    version = release["version"]
    metrics = metrics if metrics is not None else Metrics()
    host = socket.gethostname()
    latency = release["latency_ms"] / 1000.0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Idle keep-alive connections must not pin a thread forever.
        timeout = 30
        server_version = "demoapp/" + version
        sys_version = ""

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            # Health checks every second would flood the journal.
            return

        def reply(self, code, body, content_type="text/plain; charset=utf-8"):
            payload = body.encode("utf-8")
            # Counted before the reply leaves: a client that has its answer
            # (and asks /metrics next) must find it counted.
            path = self.path.partition("?")[0]
            if path != "/metrics":
                metrics.observe(path, code, time.monotonic() - self.started)
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Demoapp-Version", version)
            self.end_headers()
            self.wfile.write(payload)

        def trickle(self, seconds):
            size = max(1, int(math.ceil(seconds / TRICKLE_EVERY_S)))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(size))
            self.send_header("X-Demoapp-Version", version)
            self.end_headers()
            for _byte in range(size):
                time.sleep(TRICKLE_EVERY_S)
                self.wfile.write(b".")

        def do_GET(self):  # pylint: disable=invalid-name
            self.started = time.monotonic()  # pylint: disable=attribute-defined-outside-init
            path, _sep, query = self.path.partition("?")
            if path == "/":
                digest = hashlib.sha256(host.encode("utf-8"))
                for _round in range(WORK_ROUNDS):
                    digest = hashlib.sha256(digest.digest())
                if latency:
                    time.sleep(latency)
                if schedule.next_fails():
                    self.reply(500, "demoapp %s on %s: injected error\n" % (version, host))
                else:
                    self.reply(200, "Hello from demoapp %s on %s (%s)\n" % (version, host, digest.hexdigest()[:12]))
            elif path == "/slow":
                seconds = slow_seconds(query)
                if seconds is None:
                    self.reply(400, "seconds must be a number\n")
                    return
                time.sleep(seconds)
                self.reply(200, "Slow hello from demoapp %s on %s after %.3g s\n" % (version, host, seconds))
            elif path == "/healthz":
                if release["healthz_trickle_s"]:
                    self.trickle(release["healthz_trickle_s"])
                elif release["healthz_fail"]:
                    self.reply(500, "unhealthy\n")
                else:
                    self.reply(200, "ok\n")
            elif path == "/metrics":
                self.reply(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/version":
                self.reply(200, json.dumps({"version": version, "host": host}) + "\n", "application/json")
            else:
                self.reply(404, "not found\n")

    return Handler


def main(argv=None):
    parser = argparse.ArgumentParser(description="grayrelease demo service")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument(
        "--release-file",
        default=os.path.join(os.path.dirname(os.path.realpath(__file__)), "release.json"),
        help="default: release.json in the release directory (symlinks resolved)",
    )
    args = parser.parse_args(argv)
    try:
        release = load_release(args.release_file)
    except (OSError, ValueError) as exc:
        print("demoapp: cannot load release: %s" % exc, file=sys.stderr)
        return 2
    if release["crash_on_start"]:
        print("demoapp %s: crash_on_start is set in this release; exiting" % release["version"], file=sys.stderr)
        return 3
    if socket.gethostname() in release["crash_on_hosts"]:
        print("demoapp %s: crash_on_hosts names this host (%s); exiting" % (release["version"], socket.gethostname()),
              file=sys.stderr)
        return 3
    if release["start_delay_s"]:
        time.sleep(release["start_delay_s"])
    spared = release["errors_on_hosts"] and socket.gethostname() not in release["errors_on_hosts"]
    server = Server((args.bind, args.port), make_handler(release, ErrorSchedule(0.0 if spared else release["error_rate"])))

    def stop(signum, frame):  # pylint: disable=unused-argument
        # shutdown() blocks until serve_forever returns, so not from this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("demoapp %s listening on %s:%d" % (release["version"], args.bind, args.port), flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
