# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/load.py's slow-request arrivals, against a loopback server that records them."""
from __future__ import annotations

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LOAD = os.path.join(REPO, "scripts", "load.py")


def _arrivals(mode, seed=None, rate=20.0, seconds=3.0):
    """Times at which /slow requests reached the server during one bounded load run."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.startswith("/slow"):
                seen.append(time.monotonic())
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    cmd = [sys.executable, LOAD, "--url", base + "/", "--rate", "1", "--duration", str(seconds),
           "--slow-url", base + "/slow", "--slow-rate", str(rate), "--slow-seconds", "0.1",
           "--slow-arrivals", mode]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True)
    finally:
        server.shutdown()
        server.server_close()
    return seen


def _gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def _off_beat(times, gap):
    """How far (90th percentile, seconds) the arrivals stray from one fixed beat of ``gap``.

    Measured on the schedule, not on the gaps: a loaded machine delays single
    arrivals (the clean-clone CI run saw gaps of 9 to 126 ms at a 50 ms beat),
    which scatters the gaps but not the schedule, while random arrivals wander
    off any beat (a random walk: seed 3's poisson run strays 0.2 s).
    """
    residuals = [t - k * gap for k, t in enumerate(times)]
    middle = statistics.median(residuals)
    strays = sorted(abs(r - middle) for r in residuals)
    return strays[int(0.9 * (len(strays) - 1))]


def test_periodic_slow_requests_come_at_a_steady_beat():
    times = _arrivals("periodic")
    assert len(times) >= 40, times
    assert _off_beat(times, 1 / 20.0) < 0.1, _gaps(times)


def test_poisson_slow_requests_come_at_random_at_the_same_mean_rate():
    times = _arrivals("poisson", seed=3)
    gaps = _gaps(times)
    # 20 per second for 3 s: about 60, with random gaps (an exponential's
    # coefficient of variation is 1).
    assert 30 <= len(times) <= 100, len(times)
    assert statistics.pstdev(gaps) / statistics.mean(gaps) > 0.6, gaps
    assert _off_beat(times, 1 / 20.0) > 0.1, gaps  # the measure the periodic test uses can tell them apart
