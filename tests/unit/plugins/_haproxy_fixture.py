# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real HAProxy on loopback for the balancer-control tests.

``HAProxyLab`` writes a config into a temp dir, with admin-level unix and TCP
runtime sockets and a user-level unix socket, backed by small Python HTTP
servers on 127.0.0.1 whose health can be flipped and which can hold a request
open (``/slow?s=N``) to keep a session on a server. HAProxy runs in the
foreground (-db) and is stopped at the end. Everything is loopback only and
every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from _decisions_helpers import closed_port

HAPROXY_CANDIDATES = ("haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


def find_haproxy():
    for cand in HAPROXY_CANDIDATES:
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if path:
            return path
    return None


MISSING_MSG = ("HAProxy is not installed (no haproxy on PATH or in /usr/sbin): these tests need a real "
               "haproxy process; install it with 'apt-get install -y haproxy'")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients cut by 'shutdown sessions' are part of the tests


class AppServer(object):
    """HTTP server on 127.0.0.1: /healthz follows ``healthy``; /slow?s=N holds the
    request N seconds, or until ``release`` is set (a test that must not race
    a busy machine's clock ends its held requests when it has seen what it waits for)."""

    def __init__(self, name):
        self.name = name
        self.healthy = True
        self.served = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                url = urlparse(self.path)
                code = 200
                if url.path == "/healthz":
                    code = 200 if outer.healthy else 503
                else:
                    outer.served += 1
                if url.path == "/slow":
                    secs = min(float(parse_qs(url.query).get("s", ["5"])[0]), 60.0)
                    outer.release.wait(secs)
                body = ("%s\n" % outer.name).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # HAProxy killed the session (shutdown sessions): expected in tests

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


CONFIG = """\
global
    noreuseport
    stats socket {admin} mode 600 level admin
    stats socket {user} mode 600 level user
    stats socket ipv4@127.0.0.1:{tcp_port} level admin
    stats timeout 30s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A health check's read timeout: without it HAProxy uses `inter` (200 ms),
    # and on a loaded CI machine the in-process app servers answer slower
    # than that, so healthy servers went DOWN mid-test. A failing check here
    # is always a 503 or a refused connection, never a slow answer.
    timeout check 5s
    option http-keep-alive

frontend fe
    bind 127.0.0.1:{fe_port}
    default_backend web

backend web
    balance roundrobin
    option httpchk GET /healthz
{servers}
"""


class HAProxyLab(object):
    SERVERS = (("s1", 1), ("s2", 1), ("s3", 10), ("bad", 1))

    def __init__(self, binary, inter_ms=200):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="gr-haproxy-")
        self.admin = os.path.join(self.tmp, "admin.sock")
        self.user = os.path.join(self.tmp, "user.sock")
        self.apps = {}
        lines = []
        for name, weight in self.SERVERS:
            app = AppServer(name)
            self.apps[name] = app
            lines.append("    server %s 127.0.0.1:%d check inter %dms fall 2 rise 2 weight %d"
                         % (name, app.port, inter_ms, weight))
        self.apps["bad"].healthy = False
        self.config = os.path.join(self.tmp, "haproxy.cfg")
        # A free port found now may be taken by a parallel test before
        # HAProxy binds it: start again on fresh ports when that happens.
        # HAProxy binds with SO_REUSEPORT by default, so a port shared with
        # another HAProxy (or this one's admin listener) would bind anyway
        # and split the connections between the two: `noreuseport` above
        # makes that a bind failure, and the two ports here must differ.
        for attempt in range(3):
            self.tcp_port = closed_port()
            self.tcp = "tcp:127.0.0.1:%d" % self.tcp_port
            self.fe_port = closed_port()
            while self.fe_port == self.tcp_port:
                self.fe_port = closed_port()
            with open(self.config, "w") as fh:
                fh.write(CONFIG.format(admin=self.admin, user=self.user, tcp_port=self.tcp_port,
                                       fe_port=self.fe_port, servers="\n".join(lines)))
            self.log = open(os.path.join(self.tmp, "haproxy.log"), "w")
            self.proc = subprocess.Popen([binary, "-db", "-f", self.config], stdout=self.log,
                                         stderr=subprocess.STDOUT)
            try:
                self._wait_started()
                return
            except RuntimeError as exc:
                self.log.close()
                if attempt == 2 or "failed to start their listeners" not in str(exc):
                    raise

    def _wait_started(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited (%s): %s" % (self.proc.returncode, self.read_log()))
            if os.path.exists(self.admin):
                try:
                    states = self.stat()
                    if all(states.get(n, "").startswith("UP") for n in ("s1", "s2", "s3")) and \
                            states.get("bad", "").startswith("DOWN"):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("haproxy did not get its servers UP in 15 s: %s" % self.read_log())

    def read_log(self):
        self.log.flush()
        with open(self.log.name) as fh:
            return fh.read()[-2000:]

    def raw(self, cmd, path=None):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path or self.admin)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        return out.decode()

    def stat(self):
        """server -> HAProxy status string, independent of the code under test."""
        out = {}
        for line in self.raw("show stat -1 4 -1").splitlines()[1:]:
            f = line.split(",")
            if len(f) > 17 and f[0] == "web":
                out[f[1]] = f[17]
        return out

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.fe_port, path)

    def get(self, path="/", timeout=10):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
            return resp.read().decode().strip()

    def hold_session(self, server_name, seconds):
        """Start a request that HAProxy routes to ``server_name`` and that lasts ``seconds``.

        Returns (thread, outcome dict). The other servers are drained for the
        routing and then readied, through raw commands (not the code under
        test); drain, unlike maint, keeps their health checks running.
        """
        others = [name for name, _port in self.SERVERS if name != server_name]
        for n in others:
            self.raw("set server web/%s state drain" % n)
        outcome = {}

        def run():
            try:
                outcome["body"] = self.get("/slow?s=%s" % seconds, timeout=seconds + 30)
            except Exception as exc:  # the test inspects it
                outcome["error"] = repr(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._scur(server_name) > 0:
                break
            time.sleep(0.02)
        for n in others:
            self.raw("set server web/%s state ready" % n)
        assert self._scur(server_name) > 0, "could not hold a session on %s" % server_name
        return t, outcome

    def _scur(self, server_name):
        for line in self.raw("show stat -1 4 -1").splitlines()[1:]:
            f = line.split(",")
            if len(f) > 4 and f[0] == "web" and f[1] == server_name:
                return int(f[4] or 0)
        return 0

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        for app in self.apps.values():
            app.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def running_lab():
    """A started HAProxyLab for a fixture; the test is skipped, saying how to
    install it, only when HAProxy itself is missing."""
    binary = find_haproxy()
    if binary is None:
        pytest.skip(MISSING_MSG)
    lab = HAProxyLab(binary)
    try:
        yield lab
    finally:
        lab.close()
