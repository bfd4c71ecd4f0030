# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo app as the fleet runs it: built by scripts/build-release.sh,
unpacked, started as a process on loopback, probed over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "scripts", "build-release.sh")


def build(tmp_path, version, *flags):
    out = tmp_path / "dist"
    result = subprocess.run([BUILD, version, "--out", str(out)] + list(flags),
                            capture_output=True, text=True, check=True, timeout=30)
    archive = result.stdout.strip()
    assert archive == str(out / ("demoapp-%s.tar.gz" % version))
    return archive


def unpack(tmp_path, archive):
    dest = tmp_path / "releases"
    with tarfile.open(archive) as tar:
        tar.extractall(dest)  # noqa: S202 - our own archive
    return dest


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Running:
    """One app process on a free loopback port, always stopped afterwards."""

    def __init__(self, release_dir, wait=10.0):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(str(release_dir), "app.py"), "--bind", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.wait = wait

    def ready(self):
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def start(tmp_path, version, *flags, wait=10.0):
    root = unpack(tmp_path, build(tmp_path, version, *flags))
    return Running(root / ("demoapp-" + version), wait=wait)


def test_archive_is_reproducible_with_single_top_dir(tmp_path):
    first = build(tmp_path, "1.2.3")
    with open(first, "rb") as handle:
        one = handle.read()
    time.sleep(1.1)  # a leaked wall-clock mtime would change the bytes
    with open(build(tmp_path, "1.2.3"), "rb") as handle:
        assert handle.read() == one
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert {m.name.split("/")[0] for m in members} == {"demoapp-1.2.3"}
    assert sorted(m.name for m in members) == ["demoapp-1.2.3", "demoapp-1.2.3/app.py", "demoapp-1.2.3/release.json"]
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 1704067200 for m in members)


def test_healthy_release_serves_its_version(tmp_path):
    with start(tmp_path, "v7") as app:
        assert app.ready()
        status, body = get(app.port, "/")
        assert status == 200 and "v7" in body
        assert get(app.port, "/healthz") == (200, "ok\n")
        status, body = get(app.port, "/version")
        assert status == 200 and json.loads(body)["version"] == "v7"
        assert get(app.port, "/nope")[0] == 404


@pytest.mark.parametrize("rate,requests,errors", [(0.25, 40, 10), (1, 5, 5), (0.1, 20, 2)])
def test_error_rate_hits_exact_share_and_spares_healthz(tmp_path, rate, requests, errors):
    with start(tmp_path, "v2", "--error-rate", str(rate)) as app:
        assert app.ready()
        codes = [get(app.port, "/")[0] for _request in range(requests)]
        assert codes.count(500) == errors and codes.count(200) == requests - errors
        assert [get(app.port, "/healthz")[0] for _check in range(5)] == [200] * 5


def test_errors_on_hosts_limits_the_error_rate_to_those_hosts(tmp_path):
    here = socket.gethostname()
    with start(tmp_path, "v5", "--error-rate", "1", "--errors-on-hosts", "other-host") as app:
        assert app.ready()
        assert [get(app.port, "/")[0] for _request in range(5)] == [200] * 5
    with start(tmp_path / "again", "v6", "--error-rate", "1", "--errors-on-hosts", "other-host,%s" % here) as app:
        assert app.ready()
        assert [get(app.port, "/")[0] for _request in range(5)] == [500] * 5


def test_healthz_fail_keeps_root_working(tmp_path):
    with start(tmp_path, "v3", "--healthz-fail") as app:
        assert app.ready()
        assert get(app.port, "/healthz")[0] == 500
        assert get(app.port, "/")[0] == 200


def test_latency_is_added_to_root_only(tmp_path):
    with start(tmp_path, "v4", "--latency-ms", "300") as app:
        assert app.ready()
        began = time.monotonic()
        get(app.port, "/")
        assert time.monotonic() - began >= 0.3
        began = time.monotonic()
        get(app.port, "/healthz")
        assert time.monotonic() - began < 0.3


def test_start_delay_postpones_listening(tmp_path):
    with start(tmp_path, "v5", "--start-delay", "1.5", wait=0.8) as app:
        began = time.monotonic()
        assert not app.ready()
        app.wait = 10
        assert app.ready()
        assert time.monotonic() - began >= 1.4


def test_healthz_trickle_sends_headers_then_a_byte_at_a_time(tmp_path):
    with start(tmp_path, "v9", "--healthz-trickle", "1.5") as app:
        assert app.ready()
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = conn.recv(4096)
            headers_after = time.monotonic() - began
            rest = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                rest += chunk
        assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 3" in first
        # Headers at once, each body byte 0.5 s later: no single read waits long.
        assert headers_after < 0.4
        assert (first.split(b"\r\n\r\n", 1)[1] + rest) == b"..."
        assert time.monotonic() - began >= 1.4
        assert get(app.port, "/")[0] == 200


def test_crash_on_start_exits_nonzero(tmp_path):
    with start(tmp_path, "v6", "--crash-on-start") as app:
        assert app.proc.wait(timeout=10) == 3
        assert "crash_on_start" in app.proc.stderr.read()


def test_invalid_release_json_is_refused_naming_the_value(tmp_path):
    root = unpack(tmp_path, build(tmp_path, "v8")) / "demoapp-v8"
    (root / "release.json").write_text(json.dumps({"version": "v8", "error_rate": 2}))
    with Running(root) as app:
        assert app.proc.wait(timeout=10) == 2
        assert "error_rate" in app.proc.stderr.read()


@pytest.mark.parametrize("args,word", [
    (["v1", "--error-rate", "1.5"], "1.5"),
    (["v/1"], "v/1"),
    (["v1", "--latency-ms", "-3"], "-3"),
    (["v1", "--start-delay", "soon"], "soon"),
    (["v1", "--bogus"], "--bogus"),
])
def test_build_release_rejects_bad_input_naming_it(tmp_path, args, word):
    result = subprocess.run([BUILD] + args + ["--out", str(tmp_path)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and word in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_slow_endpoint_sleeps_then_answers_with_version(tmp_path):
    with start(tmp_path, "v8") as app:
        assert app.ready()
        began = time.monotonic()
        with urllib.request.urlopen("http://127.0.0.1:%d/slow?seconds=0.5" % app.port, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Demoapp-Version"] == "v8"
            assert "v8" in resp.read().decode()
        assert 0.5 <= time.monotonic() - began < 3
        # Negative is clamped to 0, a non-number is a client error.
        assert get(app.port, "/slow?seconds=-4")[0] == 200
        assert get(app.port, "/slow?seconds=abc")[0] == 400


def test_slow_seconds_default_and_cap():
    sys.path.insert(0, os.path.join(REPO, "demoapp"))
    try:
        import app as demoapp  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    assert demoapp.slow_seconds("") == 6.0
    assert demoapp.slow_seconds("seconds=2.5") == 2.5
    assert demoapp.slow_seconds("x=1&seconds=99") == 30.0
    assert demoapp.slow_seconds("seconds=nan") is None


def test_metrics_count_requests_by_handler_and_status_with_a_latency_histogram(tmp_path):
    with start(tmp_path, "v9", "--error-rate", "0.5", "--latency-ms", "20") as app:
        assert app.ready()
        codes = [get(app.port, "/")[0] for _request in range(4)]
        get(app.port, "/healthz")
        get(app.port, "/nope")
        status, text = get(app.port, "/metrics")
    assert status == 200 and codes.count(500) == 2
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert samples['demoapp_requests_total{handler="/",code="200"}'] == "2"
    assert samples['demoapp_requests_total{handler="/",code="500"}'] == "2"
    assert samples['demoapp_requests_total{handler="/healthz",code="200"}'] == "1"
    assert samples['demoapp_requests_total{handler="other",code="404"}'] == "1"
    # Cumulative buckets: none of the 20 ms requests is under 10 ms, all are under 1 s.
    assert samples['demoapp_request_duration_seconds_bucket{handler="/",le="0.01"}'] == "0"
    assert samples['demoapp_request_duration_seconds_bucket{handler="/",le="1.0"}'] == "4"
    assert samples['demoapp_request_duration_seconds_bucket{handler="/",le="+Inf"}'] == "4"
    assert samples['demoapp_request_duration_seconds_count{handler="/"}'] == "4"
    assert float(samples['demoapp_request_duration_seconds_sum{handler="/"}']) >= 0.08
    # /metrics itself is not counted.
    assert not [key for key in samples if 'handler="/metrics"' in key]
