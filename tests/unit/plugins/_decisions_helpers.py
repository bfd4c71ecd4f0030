# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helpers for the decision plugins (rollout_plan, health_check, canary_judge).

Real HTTP(S) servers on 127.0.0.1 and a runner for real `ansible` ad-hoc
commands. Imported by the test_plan*/test_health*/test_judge* files.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
# The ansible commands of the venv running the tests (the main .venv, or a venv of
# the ansible-core matrix, scripts/matrix.sh), not always the main one's.
VENV_BIN = os.path.dirname(sys.executable)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops bursts of parallel probes (SYN retries
    # then add a full second), which would measure the kernel, not the module.
    request_queue_size = 512
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A probe that timed out hangs up mid-answer; that is the test, not an error.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ssl.SSLError)):
            return
        super(_Server, self).handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Behaviour picked by path; counters per path live on the server."""

    protocol_version = 'HTTP/1.0'

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype='text/plain'):
        data = body.encode('utf-8') if isinstance(body, str) else body
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        server = self.server
        with server.lock:
            server.hits[parts.path] = server.hits.get(parts.path, 0) + 1
            count = server.hits[parts.path]
            server.seen_headers.append(dict(self.headers))
            server.inflight += 1
            server.max_inflight = max(server.max_inflight, server.inflight)
        try:
            delay_ms = float(query.get('delay_ms', ['0'])[0])
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
        finally:
            # Out of flight before the answer goes: a client that got it may start its next
            # request at once, before this handler's last line runs (that read 4 for a bound of 3).
            with server.lock:
                server.inflight -= 1
        self._respond(parts.path, query, count)

    def _respond(self, path, query, count):
        if path == '/ok':
            self._send(200, 'service ok')
        elif path == '/json':
            self._send(200, json.dumps({'status': query.get('status', ['up'])[0],
                                        'checks': {'db': True, 'version': 2}}), 'application/json')
        elif path == '/notjson':
            self._send(200, '<html>up</html>', 'text/html')
        elif path.startswith('/status/'):
            self._send(int(path.rsplit('/', 1)[1]), 'status page')
        elif path == '/flap':
            # 200, 503, 200, 503, ...: never two successes in a row.
            self._send(200 if count % 2 else 503, 'flap')
        elif path == '/recover':
            # Fails the first `fails` requests, then healthy for good.
            fails = int(query.get('fails', ['2'])[0])
            self._send(503 if count <= fails else 200, 'recovering')
        elif path == '/headers':
            self._send(200 if self.headers.get('X-Token') == 'sesame' else 401, 'headers')
        else:
            self._send(404, 'not found')


def start_http_server(tls_context=None):
    server = _Server(('127.0.0.1', 0), _Handler)
    server.lock = threading.Lock()
    server.hits = {}
    server.seen_headers = []
    server.inflight = 0
    server.max_inflight = 0
    scheme = 'http'
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        scheme = 'https'
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    server.base_url = '%s://127.0.0.1:%d' % (scheme, server.server_address[1])
    return server


def stop_http_server(server):
    server.shutdown()
    server.server_close()


def closed_port():
    """A loopback port with nothing listening (bound then released)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def make_ca_and_server_cert(directory):
    """Self-signed CA plus a server cert for 127.0.0.1/localhost via the openssl CLI."""
    openssl = shutil.which('openssl')
    if openssl is None:
        return None
    d = str(directory)

    def run(*args):
        subprocess.run([openssl] + list(args), check=True, cwd=d, capture_output=True, timeout=60)

    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=grayrelease test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
    with open(os.path.join(d, 'ext.cnf'), 'w') as f:
        f.write('subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n'
                'extendedKeyUsage=serverAuth\n')
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
        '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf')
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(d, 'server.pem'), os.path.join(d, 'server.key'))
    return os.path.join(d, 'ca.pem'), context


def ansible_env():
    env = dict(os.environ)
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = COLLECTIONS
    env['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS
    env['ANSIBLE_NOCOLOR'] = 'true'
    env['ANSIBLE_FORCE_COLOR'] = 'false'
    env['ANSIBLE_LOCALHOST_WARNING'] = 'false'
    env['ANSIBLE_INVENTORY_UNPARSED_WARNING'] = 'false'
    return env


def run_adhoc(module, args, extra=(), timeout=120):
    """Run `ansible localhost -m MODULE -a JSON -o`; return (ok, result dict, raw output)."""
    ansible = os.path.join(VENV_BIN, 'ansible')
    cmd = [ansible, 'localhost', '-o', '-m', module, '-a', json.dumps(args)] + list(extra)
    proc = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    out = proc.stdout
    for line in out.splitlines():
        if line.startswith('localhost | ') and '=> ' in line:
            status, dummy, payload = line.partition(' => ')
            return 'SUCCESS' in status, json.loads(payload), out + proc.stderr
    raise AssertionError('no result line from ansible (rc %d):\n%s\n%s' % (proc.returncode, out, proc.stderr))


def python_without(module_name):
    """A system python3 that lacks module_name, for missing-library tests."""
    for candidate in ('/usr/bin/python3', '/usr/local/bin/python3'):
        if os.path.exists(candidate) and os.path.realpath(candidate) != os.path.realpath(sys.executable):
            probe = subprocess.run([candidate, '-c', 'import %s' % module_name], capture_output=True, timeout=30, check=False)
            if probe.returncode != 0:
                return candidate
    return None
