# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Concurrent HTTP(S) health probing for grayrelease.canary.health_check.

Private to grayrelease.canary. Stdlib only, plus jmespath, which is imported
only when a target uses json_query: the module runs on balancer hosts where
jmespath may be missing and most checks do not need it.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._http import WATCHDOG, ssl_context
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact, redact_url

USER_AGENT = 'grayrelease.canary.health_check'
# Health endpoints answer small documents; a cap keeps a misconfigured URL
# (a large file) from eating memory on the balancer host.
MAX_BODY_BYTES = 1024 * 1024
# Keys a per-target dict may override.
OVERRIDES = ('status_codes', 'body_regex', 'json_query', 'json_expect', 'max_latency_ms',
             'rise', 'timeout', 'headers', 'validate_certs', 'ca_path')


class HealthError(ValueError):
    """Invalid health_check input; the message names the offending value, any
    credentials in it redacted (it names the URL the value belongs to)."""

    def __init__(self, msg):
        super(HealthError, self).__init__(redact_url(msg))


class MissingLibraryError(Exception):
    """A Python library needed by the requested checks is not installed."""

    def __init__(self, library, tb):
        super(MissingLibraryError, self).__init__(library)
        self.library = library
        self.traceback = tb


_jmespath = None


def load_jmespath():
    """Import jmespath on first use; raise MissingLibraryError if absent."""
    global _jmespath
    if _jmespath is None:
        try:
            import jmespath
        except ImportError:
            raise MissingLibraryError('jmespath', traceback.format_exc())
        _jmespath = jmespath
    return _jmespath


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_list(value):
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _is_positive(value):
    # isfinite also rejects NaN, which compares false with everything.
    return _is_number(value) and math.isfinite(value) and value > 0


# ---------------------------------------------------------------- targets

class Target(object):
    """One URL with its effective settings (defaults merged with overrides)."""

    def __init__(self, url, settings):
        self.url = url
        self.status_codes = settings['status_codes']
        self.body_regex = settings['body_regex']
        self.json_query = settings['json_query']
        self.json_expect = settings['json_expect']
        self.max_latency_ms = settings['max_latency_ms']
        self.rise = settings['rise']
        self.timeout = settings['timeout']
        self.headers = settings['headers']
        self.validate_certs = settings['validate_certs']
        self.ca_path = settings['ca_path']
        parts = urlsplit(url)
        self.https = parts.scheme == 'https'
        self.host = parts.hostname
        self.port = parts.port
        self.path = (parts.path or '/') + ('?' + parts.query if parts.query else '')
        self.compiled_regex = None
        self.compiled_query = None
        self.ssl_context = None


def _check_url(url):
    if not isinstance(url, str) or not url:
        raise HealthError('target %r is not a URL' % (url,))
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https'):
        raise HealthError('target %r: scheme must be http or https' % (url,))
    try:
        parts.port
    except ValueError:
        raise HealthError('target %r: invalid port' % (url,))
    if not parts.hostname:
        raise HealthError('target %r: no host in URL' % (url,))


def _check_settings(where, settings):
    codes = settings['status_codes']
    if not _is_list(codes) or not codes:
        raise HealthError('%s: status_codes %r must be a non-empty list of HTTP status codes' % (where, codes))
    for code in codes:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            raise HealthError('%s: status code %r is not an HTTP status code (100-599)' % (where, code))
    rise = settings['rise']
    if not isinstance(rise, int) or isinstance(rise, bool) or rise < 1:
        raise HealthError('%s: rise %r must be an integer >= 1' % (where, rise))
    timeout = settings['timeout']
    if not _is_positive(timeout):
        raise HealthError('%s: timeout %r must be a number of seconds > 0' % (where, timeout))
    latency = settings['max_latency_ms']
    if latency is not None and not _is_positive(latency):
        raise HealthError('%s: max_latency_ms %r must be a number > 0' % (where, latency))
    headers = settings['headers']
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise HealthError('%s: headers must be a dict of name -> value' % (where,))
        for name, value in headers.items():
            # The value is not echoed: headers may carry credentials.
            if not isinstance(name, str) or not re.match(r'^[!#$%&\'*+.^_`|~0-9A-Za-z-]+\Z', name):
                raise HealthError('%s: header name %r is not a valid HTTP header name' % (where, name))
            if not isinstance(value, (str, int, float)) or isinstance(value, bool) \
                    or '\n' in str(value) or '\r' in str(value):
                raise HealthError('%s: the value of header %r must be a single-line string' % (where, name))
    if not isinstance(settings['validate_certs'], bool):
        raise HealthError('%s: validate_certs %r must be true or false' % (where, settings['validate_certs']))
    ca_path = settings['ca_path']
    if ca_path is not None and (not isinstance(ca_path, str) or not os.path.exists(ca_path)):
        raise HealthError('%s: ca_path %r does not exist' % (where, ca_path))
    if settings['body_regex'] is not None and not isinstance(settings['body_regex'], str):
        raise HealthError('%s: body_regex %r must be a string' % (where, settings['body_regex']))
    query = settings['json_query']
    if query is not None and (not isinstance(query, str) or not query):
        raise HealthError('%s: json_query %r must be a non-empty JMESPath expression' % (where, query))
    if settings['json_expect'] is not None and query is None:
        raise HealthError('%s: json_expect %r is set but json_query is not' % (where, settings['json_expect']))


def build_targets(targets, defaults):
    """Validate targets and merge defaults; returns a list of Target.

    Raises HealthError for bad input and MissingLibraryError when a
    json_query is used without jmespath installed.
    """
    if not _is_list(targets) or not targets:
        raise HealthError('targets must be a non-empty list of URLs or dicts with url, got %r' % (targets,))
    result = []
    seen = set()
    contexts = {}
    for index, item in enumerate(targets):
        settings = dict((key, defaults.get(key)) for key in OVERRIDES)
        if isinstance(item, Mapping):
            url = item.get('url')
            _check_url(url)
            for key, value in item.items():
                if key == 'url':
                    continue
                if key not in OVERRIDES:
                    raise HealthError('target %r: unknown key %r (allowed: url, %s)' % (url, key, ', '.join(OVERRIDES)))
                if key == 'headers' and isinstance(value, Mapping) and isinstance(settings['headers'], Mapping):
                    merged = dict(settings['headers'])
                    merged.update(value)
                    value = merged
                settings[key] = value
        else:
            url = item
            _check_url(url)
        where = 'target %r' % (url,)
        if url in seen:
            raise HealthError('duplicate target %r' % (url,))
        seen.add(url)
        _check_settings(where, settings)
        target = Target(url, settings)
        if target.body_regex is not None:
            try:
                target.compiled_regex = re.compile(target.body_regex)
            except re.error as exc:
                raise HealthError('%s: body_regex %r is not a valid regular expression: %s'
                                  % (where, target.body_regex, exc))
        if target.json_query is not None:
            jmespath = load_jmespath()
            try:
                target.compiled_query = jmespath.compile(target.json_query)
            except Exception as exc:  # jmespath raises several ParseError flavours
                raise HealthError('%s: json_query %r is not a valid JMESPath expression: %s'
                                  % (where, target.json_query, exc))
        if target.https:
            key = (target.validate_certs, target.ca_path)
            if key not in contexts:
                contexts[key] = _ssl_context(target.validate_certs, target.ca_path, where)
            target.ssl_context = contexts[key]
        result.append(target)
    return result


def _ssl_context(validate_certs, ca_path, where):
    try:
        return ssl_context(validate_certs, ca_path)
    except (ssl.SSLError, OSError) as exc:
        raise HealthError('%s: cannot load CA certificates from %r: %s' % (where, ca_path, exc))


# ---------------------------------------------------------------- probing

def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _expect_matches(value, expect):
    if expect is None:
        # No expected value: the query must find something truthy.
        return bool(value)
    if isinstance(value, bool) != isinstance(expect, bool):
        # Python's True == 1 must not make a JSON `true` match an expected 1.
        if isinstance(expect, str) and not isinstance(value, str):
            return json.dumps(value) == expect
        return False
    if value == expect:
        return True
    # An expected value given as a string (e.g. from -a key=value) matches
    # the JSON spelling of a scalar: "true", "1", "2.5".
    if isinstance(expect, str) and not isinstance(value, (str, list, dict)):
        return json.dumps(value) == expect
    return False


def _evaluate(target, status, body, latency_ms):
    """Return None when the response is healthy, else the reason."""
    if status not in target.status_codes:
        return 'status %d not in %s' % (status, list(target.status_codes))
    if target.max_latency_ms is not None and latency_ms > target.max_latency_ms:
        return 'latency %.0f ms over max_latency_ms %s' % (latency_ms, target.max_latency_ms)
    text = None
    if target.compiled_regex is not None:
        text = body.decode('utf-8', 'replace')
        if not target.compiled_regex.search(text):
            return 'body does not match body_regex %r' % (target.body_regex,)
    if target.compiled_query is not None:
        if text is None:
            text = body.decode('utf-8', 'replace')
        try:
            document = json.loads(text)
        except ValueError as exc:
            return 'body is not JSON (%s)' % (exc,)
        value = target.compiled_query.search(document)
        if not _expect_matches(value, target.json_expect):
            if target.json_expect is None:
                return 'json_query %r gave %s, expected a non-empty value' % (target.json_query, _short(value))
            return 'json_query %r gave %s, expected %s' % (
                target.json_query, _short(value), _short(target.json_expect))
    return None


def _describe_error(exc, timeout):
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 'TLS certificate verification failed: %s' % (exc.verify_message or exc,)
    if isinstance(exc, ssl.SSLError):
        return 'TLS error: %s' % (exc,)
    if isinstance(exc, ConnectionRefusedError):
        return 'connection refused'
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timed out after %g s' % (timeout,)
    if isinstance(exc, socket.gaierror):
        return 'cannot resolve host: %s' % (exc,)
    if isinstance(exc, http.client.HTTPException):
        return 'bad HTTP response: %s' % (exc.__class__.__name__ if not str(exc) else exc,)
    return '%s: %s' % (exc.__class__.__name__, exc)


def _time_left(end):
    """Seconds until end, for a socket timeout; socket.timeout once it passed."""
    left = end - time.monotonic()
    if left <= 0:
        raise socket.timeout('timed out')
    return left


def _connect(host, port, end):
    """socket.create_connection, but all addresses share one deadline."""
    first_error = None
    for family, kind, proto, dummy, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_time_left(end))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            if isinstance(exc, socket.timeout) and end <= time.monotonic():
                raise
            first_error = first_error or exc
            continue
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock
    raise first_error or OSError('getaddrinfo returned no address for %s' % (host,))


# What a request was doing when its time ran out, for the reason.
_PHASES = {
    'connect': 'connecting',
    'tls': 'TLS handshake',
    'send': 'sending the request',
    'headers': 'waiting for the response headers',
    'body': 'response still arriving',
}


def _read_body(response, sock, end):
    """Up to MAX_BODY_BYTES of the body, in chunks, each read bounded by the time left."""
    chunks = []
    size = 0
    while size < MAX_BODY_BYTES:
        sock.settimeout(_time_left(end))
        chunk = response.read1(min(65536, MAX_BODY_BYTES - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b''.join(chunks)


def probe(target, timeout, clock=time.monotonic):
    """One GET of target.url; returns (status, reason or None, latency_ms or None).

    `timeout` bounds the whole request: connect, TLS handshake, sending, the
    response headers and the body. Every blocking step gets the time left as
    its socket timeout, and the watchdog shuts the connection down at the
    deadline, so a server that trickles bytes cannot stretch a probe.
    (Name resolution is the one step it cannot cut short.)
    """
    # Direct connection on purpose: environment proxies would probe the proxy,
    # not the host HAProxy sends traffic to. Redirects are not followed. The
    # socket is ours (connected and wrapped here), so the deadline covers it.
    port = target.port or (443 if target.https else 80)
    if target.https:
        conn = http.client.HTTPSConnection(target.host, port, timeout=timeout, context=target.ssl_context)
    else:
        conn = http.client.HTTPConnection(target.host, port, timeout=timeout)
    headers = {'User-Agent': USER_AGENT, 'Accept': '*/*', 'Connection': 'close'}
    if target.headers:
        headers.update((k, str(v)) for k, v in target.headers.items())
    start = clock()
    end = time.monotonic() + timeout
    watch = None
    cut_off = False
    response = None
    phase = 'connect'
    try:
        try:
            sock = conn.sock = _connect(target.host, port, end)
            watch = WATCHDOG.watch(sock, end)
            if target.https:
                phase = 'tls'
                sock.settimeout(_time_left(end))
                sock = conn.sock = target.ssl_context.wrap_socket(sock, server_hostname=target.host)
            phase = 'send'
            sock.settimeout(_time_left(end))
            conn.request('GET', target.path, headers=headers)
            phase = 'headers'
            sock.settimeout(_time_left(end))
            response = conn.getresponse()
            if watch.fired:
                # Cut off mid-headers: http.client takes the end of the
                # stream for the end of the headers.
                raise socket.timeout('timed out')
            phase = 'body'
            body = _read_body(response, sock, end)
            latency_ms = (clock() - start) * 1000.0
            status = response.status
        finally:
            # Whatever failed after the watchdog cut the connection is a timeout.
            cut_off = watch is not None and WATCHDOG.release(watch)
            if response is not None:
                response.close()
            conn.close()
    except Exception as exc:  # every failure is a probe result, never a crash
        if cut_off or isinstance(exc, (socket.timeout, TimeoutError)):
            return None, 'timed out after %g s (%s)' % (timeout, _PHASES[phase]), None
        return None, _describe_error(exc, timeout), None
    # A body that ended because the watchdog shut the connection is partial.
    if cut_off:
        return None, 'timed out after %g s (%s)' % (timeout, _PHASES[phase]), None
    if latency_ms > timeout * 1000.0:
        return status, 'timed out after %g s (response took %.0f ms)' % (timeout, latency_ms), latency_ms
    return status, _evaluate(target, status, body, latency_ms), latency_ms


def _percentile(sorted_values, fraction):
    # Nearest rank: always a latency that was actually observed.
    rank = int(math.ceil(fraction * len(sorted_values)))
    return sorted_values[max(rank, 1) - 1]


def latency_summary(latencies):
    if not latencies:
        return {'p50': None, 'p95': None, 'max': None}
    values = sorted(latencies)
    return {
        'p50': round(_percentile(values, 0.50), 3),
        'p95': round(_percentile(values, 0.95), 3),
        'max': round(values[-1], 3),
    }


class _ProbePool(object):
    """A fixed set of worker threads that live for the whole check.

    The first round's jobs are queued before the workers start, so every
    worker begins probing as soon as it runs. concurrent.futures instead
    starts one worker per submit and waits for each to run, which with 200
    targets on two busy CPUs stretched the start of a round to ~90 ms.
    """

    def __init__(self, size, func, end=None, clock=time.monotonic):
        self._func = func
        self._size = size
        # No probe starts at or after `end` (the deadline): with more targets
        # than workers a round runs in waves, and a wave that would begin
        # after the deadline is skipped rather than stretch the check.
        self._end = end
        self._clock = clock
        self._jobs = queue.SimpleQueue()
        self._done = queue.SimpleQueue()
        self._started = 0

    def _work(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            state, timeout = job
            if self._end is not None and self._clock() >= self._end:
                self._done.put((state, None))
                continue
            try:
                outcome = self._func(state.target, timeout)
            except Exception as exc:  # a bug in a probe must not hang the round
                outcome = (None, 'probe failed: %s: %s' % (exc.__class__.__name__, exc), None)
            self._done.put((state, outcome))

    def run_round(self, states):
        for state in states:
            self._jobs.put((state, state.target.timeout))
        while self._started < min(self._size, len(states)):
            # Daemon threads: a probe stuck where its deadline cannot reach
            # (name resolution) must not keep the module process alive.
            thread = threading.Thread(target=self._work, name='health_check-%d' % self._started)
            thread.daemon = True
            thread.start()
            self._started += 1
        return [self._done.get() for dummy in states]

    def close(self):
        for dummy in range(self._started):
            self._jobs.put(None)


class _State(object):
    def __init__(self, target):
        self.target = target
        self.attempts = 0
        self.consecutive = 0
        self.last_status = None
        self.last_error = None
        self.latencies = []
        self.ok = False


def run_checks(targets, interval=1.0, deadline=60.0, concurrency=256,
               clock=time.monotonic, sleep=time.sleep, probe_func=probe):
    """Probe targets in rounds until each is healthy `rise` times in a row.

    Every round probes all not-yet-healthy targets in parallel (at most
    `concurrency` at once). Rounds start `interval` seconds apart; no round
    starts at or after the deadline, and no probe of a round starts after
    it (a round with more targets than `concurrency` runs in waves). A
    started probe runs with the full request timeout, which bounds the whole
    request (see probe): cutting it to the time left would turn the real
    reason of a failing target into a meaningless short timeout. The call
    thus returns by deadline + the largest timeout at the latest.
    """
    if not _is_number(interval) or not math.isfinite(interval) or interval < 0:
        raise HealthError('interval %r must be a number of seconds >= 0' % (interval,))
    if not _is_positive(deadline):
        raise HealthError('deadline %r must be a number of seconds > 0' % (deadline,))
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise HealthError('concurrency %r must be an integer >= 1' % (concurrency,))
    start = clock()
    end = start + deadline
    states = [_State(t) for t in targets]
    pending = list(states)
    pool = _ProbePool(max(1, min(concurrency, len(targets))), probe_func, end=end, clock=clock)
    try:
        while pending:
            round_start = clock()
            # Outcomes are applied here, in one thread: no locking needed.
            for state, outcome in pool.run_round(pending):
                if outcome is None:
                    continue  # not started: the deadline had passed
                status, error, latency_ms = outcome
                state.attempts += 1
                state.last_status = status
                state.last_error = error
                if latency_ms is not None:
                    state.latencies.append(latency_ms)
                if error is None:
                    state.consecutive += 1
                    if state.consecutive >= state.target.rise:
                        state.ok = True
                else:
                    state.consecutive = 0
            pending = [s for s in pending if not s.ok]
            if not pending:
                break
            next_round = round_start + interval
            if next_round >= end or clock() >= end:
                break
            pause = next_round - clock()
            if pause > 0:
                sleep(pause)
    finally:
        pool.close()
    elapsed = clock() - start
    return _report(states, elapsed, deadline)


def check_urls(urls, rise=2, interval=1.0, deadline=60.0, timeout=5.0, clock=time.monotonic, sleep=time.sleep,
               probe_func=probe):
    """health_check's defaults (HTTP 200, no body or latency rule) on plain
    URLs: what another module runs to see a server healthy from its host."""
    defaults = dict((key, None) for key in OVERRIDES)
    defaults.update(status_codes=[200], rise=rise, timeout=timeout, validate_certs=True)
    return run_checks(build_targets(urls, defaults), interval=interval, deadline=deadline, clock=clock,
                      sleep=sleep, probe_func=probe_func)


def _report(states, elapsed, deadline):
    results = {}
    healthy = []
    unhealthy = []
    reasons = []
    for state in states:
        url = state.target.url
        reason = None
        if state.ok:
            healthy.append(url)
        else:
            unhealthy.append(url)
            if state.last_error is not None:
                reason = state.last_error
            elif state.attempts == 0:
                # Queued behind slow probes of other targets (see concurrency).
                reason = 'not probed before the deadline (%g s)' % (deadline,)
            else:
                reason = ('only %d of %d consecutive successful probes before the deadline (%g s)'
                          % (state.consecutive, state.target.rise, deadline))
            reasons.append('%s (%s)' % (url, reason))
        results[url] = {
            'ok': state.ok,
            'attempts': state.attempts,
            'last_status': state.last_status,
            'last_error': state.last_error,
            'latency_ms': latency_summary(state.latencies),
            'consecutive_ok': state.consecutive,
            'reason': reason,
        }
    if unhealthy:
        msg = '%d of %d targets unhealthy after %.1f s: %s' % (len(unhealthy), len(states), elapsed,
                                                               '; '.join(reasons))
    else:
        msg = 'all %d targets healthy after %.1f s' % (len(states), elapsed)
    # Printed when a task fails, and at -v: URLs are shown redacted,
    # as keys and in the lists too (callers compare URLs redacted).
    return redact({
        'healthy': healthy,
        'unhealthy': unhealthy,
        'results': results,
        'elapsed': round(elapsed, 3),
        'msg': msg,
    })
