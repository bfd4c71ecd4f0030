# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP plumbing shared by every HTTP client of grayrelease.canary.

Private to grayrelease.canary. Stdlib only.

- ``open_url()`` is the GET of every client here that follows redirects
  (artifact downloads, on a host or on the controller, and Prometheus
  queries), and ``OriginRedirectHandler`` its one redirect policy:
  credentials go only to the origin (scheme, host, port) they were given
  for. A redirect to another origin (another host or port, https to http,
  http to https too) carries no Authorization, Cookie or other header the
  caller gave, and nothing brings them back later in the chain. The health
  probes (``_health``) follow no redirect at all: a 3xx is their answer.
- ``Deadline`` bounds a whole exchange in wall-clock time, redirects and
  trickling servers included; the health probes share its ``WATCHDOG``.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from urllib.error import HTTPError
from urllib.parse import unquote, urlsplit, urlunsplit

USER_AGENT = 'grayrelease.canary'
DEFAULT_PORTS = {'http': 80, 'https': 443}
# The only request headers a redirect to another origin keeps: nothing in
# them is a credential. Everything else may be (Authorization, Cookie, a
# token under any name the user chose).
CROSS_ORIGIN_HEADERS = frozenset(('user-agent', 'accept'))


def origin(url):
    """(scheme, host, port) of a URL; None when it has no valid port (never equal to another)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, (parts.hostname or '').lower(), port or DEFAULT_PORTS.get(scheme)


def split_credentials(url):
    """(url without its userinfo, headers): ``user:password@`` becomes a Basic Authorization header.

    The userinfo ends at the last @ of the authority (urllib.parse reads it so),
    and its parts are percent-decoded.
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url, {}
    secret = '%s:%s' % (unquote(parts.username), unquote(parts.password or ''))
    header = 'Basic ' + base64.b64encode(secret.encode('utf-8')).decode('ascii')
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition('@')[2])), {'Authorization': header}


class OriginRedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirects (GET and HEAD, at most 10 hops, loops refused), but
    a hop to another origin keeps only CROSS_ORIGIN_HEADERS, and a hop to any
    scheme but http(s) fails (urllib would follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in DEFAULT_PORTS:
            raise HTTPError(req.full_url, code, 'redirect to a URL that is not http(s): %s' % newurl, headers, fp)
        new = super(OriginRedirectHandler, self).redirect_request(req, fp, code, msg, headers, newurl)
        # Compared with the request before this hop, which after a first hop
        # elsewhere holds no credential: a chain that comes back gains none.
        if new is not None and origin(new.full_url) != origin(req.full_url):
            new.headers = dict((name, value) for name, value in new.headers.items()
                               if name.lower() in CROSS_ORIGIN_HEADERS)
        return new


def ssl_context(validate_certs=True, ca_path=None):
    """The TLS context of a client: system trust (or ca_path, a PEM file or a
    hashed directory), or none at all without validate_certs. Raises ssl.SSLError
    or OSError for CA certificates that cannot be loaded."""
    if not validate_certs:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_path is None:
        return ssl.create_default_context()
    if os.path.isdir(ca_path):
        return ssl.create_default_context(capath=ca_path)
    return ssl.create_default_context(cafile=ca_path)


# ---------------------------------------------------------------- deadlines

class _Watch(object):
    """One deadline and a duplicate of its socket, for the watchdog."""

    __slots__ = ('end', 'sock', 'fired')

    def __init__(self, end, sock):
        self.end = end
        self.sock = sock
        self.fired = False


class Watchdog(object):
    """One daemon thread that cuts off the connections that pass their deadline.

    A socket timeout bounds each read, not a request: a server that trickles
    its TLS handshake, headers or body a byte at a time keeps http.client
    reading for hours. At a connection's deadline the watchdog shuts it down,
    so whatever read blocks on it returns at once. It shuts down a duplicate
    descriptor of the socket, which the watchdog alone owns: shutdown() acts
    on the connection, and http.client closing (or TLS wrapping) its own
    socket object cannot make the watchdog touch a descriptor number that was
    closed and reused meanwhile.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._heap = []
        # Tie-breaker: the heap never compares two _Watch objects.
        self._seq = itertools.count()
        self._thread = None

    def watch(self, sock, end):
        """Shut sock down at `end` (time.monotonic) unless released before."""
        entry = _Watch(end, sock.dup())
        with self._cond:
            heapq.heappush(self._heap, (end, next(self._seq), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='grayrelease-watchdog')
                self._thread.daemon = True
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def release(self, entry):
        """Stop watching; returns whether the deadline cut the connection off."""
        with self._cond:
            sock, entry.sock = entry.sock, None
        if sock is not None:
            sock.close()
        return entry.fired

    def _run(self):
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                end, dummy, entry = self._heap[0]
                left = end - time.monotonic()
                if entry.sock is not None and left > 0:
                    self._cond.wait(left)
                    continue
                # Released entries leave the heap when they reach its top.
                heapq.heappop(self._heap)
                if entry.sock is not None:
                    entry.fired = True
                    try:
                        entry.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed by the server


WATCHDOG = Watchdog()


class Deadline(object):
    """A wall-clock bound over a whole exchange: every connection opened under
    it, redirects included, and every read of the answer.

    ``passed()`` asks ``clock`` (tests pass a fake one) and whether the
    watchdog cut a connection off: it shuts every connection down when
    ``seconds`` have passed in real time, so that a read blocked on a server
    that trickles returns too. ``close()`` when done.
    """

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds
        self._watch_end = time.monotonic() + seconds
        self._watches = []

    def watch(self, sock):
        self._watches.append(WATCHDOG.watch(sock, self._watch_end))

    def passed(self):
        return self._clock() >= self._end or any(entry.fired for entry in self._watches)

    def close(self):
        for entry in self._watches:
            WATCHDOG.release(entry)


def _watched(connection_class, deadline):
    """connection_class, with each socket it connects watched by deadline (from
    before a TLS handshake or a proxy tunnel on it)."""

    class Watched(connection_class):
        def __init__(self, *args, **kwargs):
            super(Watched, self).__init__(*args, **kwargs)
            create = self._create_connection

            def create_watched(*cargs, **ckwargs):
                sock = create(*cargs, **ckwargs)
                deadline.watch(sock)
                return sock
            self._create_connection = create_watched
    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline):
        super(_HTTPHandler, self).__init__()
        self._connection = _watched(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context, deadline):
        super(_HTTPSHandler, self).__init__(context=context)
        self._connection = _watched(http.client.HTTPSConnection, deadline)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


def open_url(url, headers=None, timeout=10.0, validate_certs=True, ca_path=None, deadline=None, data=None):
    """GET url (POST ``data``, bytes, when given) and return the response (an
    http.client.HTTPResponse), after redirects (OriginRedirectHandler; urllib
    follows a POST's 301-303 as a GET without the body, and none of its 307 or
    308). ``user:password@`` in url is sent as Basic authentication;
    ``headers`` are added, and win over both.

    ``timeout`` bounds each connect and read; ``deadline`` (a Deadline) the
    whole exchange. Proxies come from the environment, as urllib has them.
    Raises urllib.error.HTTPError for an error status, and URLError, OSError,
    http.client.HTTPException or ValueError when there is no answer.
    """
    if urlsplit(url).scheme.lower() not in DEFAULT_PORTS:
        # urllib would read file:// or ftp:// URLs too.
        raise ValueError('%s is not an http(s) URL' % url)
    url, auth = split_credentials(url)
    request_headers = {'User-Agent': USER_AGENT}
    request_headers.update(auth)
    request_headers.update(headers or {})
    context = ssl_context(validate_certs, ca_path)
    if deadline is None:
        handlers = [urllib.request.HTTPSHandler(context=context)]
    else:
        handlers = [_HTTPHandler(deadline), _HTTPSHandler(context, deadline)]
    opener = urllib.request.build_opener(OriginRedirectHandler(), *handlers)
    return opener.open(urllib.request.Request(url, data=data, headers=request_headers), timeout=timeout)
