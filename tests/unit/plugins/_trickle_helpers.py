# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A loopback HTTP(S) server that trickles its answer one byte at a time, forever.

For the probe deadline tests: a per-read socket timeout never fires against it,
only an overall request deadline ends a request. Every thread is a daemon and
checks a stop event between bytes, so stop() ends them all within one tick.
"""
from __future__ import annotations

import socket
import threading
import time

# Sent before the trickle starts, per mode.
_PREFIX = {
    # Complete headers announcing a body that then arrives a byte at a time.
    'body': b'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n',
    # A status line, then one endless header value.
    'headers': b'HTTP/1.0 200 OK\r\nX-Slow: ',
}


class TrickleServer(object):
    """mode 'body' or 'headers'; `tick` seconds between two bytes."""

    def __init__(self, mode, tick=0.3, tls_context=None):
        self.mode = mode
        self.tick = tick
        self.tls_context = tls_context
        self.stop_event = threading.Event()
        self.threads = []
        self.connections = 0
        # Per connection the client gave up on: seconds from accept until the server saw it gone
        # (within two ticks of the client's close), on this process's clock, not the client's.
        self.held = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        scheme = 'https' if tls_context is not None else 'http'
        self.base_url = '%s://127.0.0.1:%d' % (scheme, self.listener.getsockname()[1])
        self._spawn(self._accept_loop)

    def _spawn(self, func, *args):
        thread = threading.Thread(target=func, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept_loop(self):
        while not self.stop_event.is_set():
            try:
                conn, dummy = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # listener closed
            self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn):
        accepted = time.monotonic()
        try:
            conn.settimeout(2.0)
            if self.tls_context is not None:
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            request = b''
            while b'\r\n\r\n' not in request and not self.stop_event.is_set():
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            conn.sendall(_PREFIX[self.mode])
            while not self.stop_event.wait(self.tick):
                conn.sendall(b'x')
        except OSError:
            # The client gave up: what the tests want.
            self.held.append(time.monotonic() - accepted)
        finally:
            conn.close()

    def gone(self, within=3.0):
        """`held` once every connection so far has been given up by its client (or `within` s passed)."""
        end = time.monotonic() + within
        while len(self.held) < self.connections and time.monotonic() < end:
            time.sleep(0.05)
        return list(self.held)

    def stop(self):
        self.stop_event.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(2.0)
