# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loopback HTTP(S) servers, one origin each (127.0.0.1, its own port, its own
scheme), that record the headers of every request and redirect on demand: what
the credential tests need to see which origin got which header.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):

    protocol_version = 'HTTP/1.0'

    def log_message(self, *args):
        pass

    def do_GET(self):  # pylint: disable=invalid-name
        origin = self.server.origin
        path = self.path
        origin.requests.append((path, dict((k.lower(), v) for k, v in self.headers.items())))
        for prefix, target in origin.forwards:
            if path.startswith(prefix):
                self._send(302, b'moved', location=target + path[len(prefix):])
                return
        if path in origin.files:
            self._send(200, origin.files[path])
        elif path.startswith('/api/v1/'):
            # A Prometheus instant answer, whatever the query: one series, value 7.
            doc = {'status': 'success', 'data': {'resultType': 'vector', 'result': [{'metric': {}, 'value': [0, '7']}]}}
            self._send(200, json.dumps(doc).encode(), ctype='application/json')
        else:
            self._send(200, b'ok')

    def _send(self, status, body, ctype='application/octet-stream', location=None):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        if location:
            self.send_header('Location', location)
        self.end_headers()
        self.wfile.write(body)


class Origin(object):
    """A server on 127.0.0.1: ``files`` (path -> bytes) to serve, ``forward(prefix,
    base)`` to answer 302 to base + the rest of the path, ``requests`` seen as
    (path, headers with lower-case names)."""

    def __init__(self, tls_context=None):
        self.files = {}
        self.forwards = []
        self.requests = []
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.server.daemon_threads = True
        self.server.origin = self
        scheme = 'http'
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
            scheme = 'https'
        self.url = '%s://127.0.0.1:%d' % (scheme, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self.thread.start()

    def forward(self, prefix, base):
        self.forwards.append((prefix, base))

    def with_credentials(self, userinfo):
        """This origin's URL with userinfo (e.g. 'user:password@')."""
        scheme, rest = self.url.split('://', 1)
        return '%s://%s%s' % (scheme, userinfo, rest)

    def headers_of(self, path):
        """The headers of every request for path (query string included), in order."""
        return [headers for seen, headers in self.requests if seen == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
