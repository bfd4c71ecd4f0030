# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy's HTTP request log (option httplog), read for the canary analysis.

Private to grayrelease.canary (module haproxy_log). Every request the
balancer served is one line with its timers; the canary judge compares the
timers of the requests canary and baseline servers answered during the
analysis window: real traffic, per request, where `show stat`'s rtime is an
average over the last 1024 requests.

A line, as rsyslog writes it (the syslog header before `haproxy[pid]:` varies
with the syslog daemon and its template, and is skipped):

    2026-11-28T20:31:02.118+00:00 lb1 haproxy[412]: 172.18.0.1:41234
    [28/Nov/2026:20:31:02.114] fe_demoapp demoapp/app1 0/0/0/3/3 200 187 - - ----
    1/1/0/0/0 0/0 "GET / HTTP/1.1"

Timers (ms): TR (request headers received) / Tw (queued) / Tc (connect) /
Tr (server response headers) / Ta (active time, all of it). -1 means the stage
was never reached (e.g. Tr for a request the server never answered).

Everything the judge reads (backend, server, timers, status) comes before the
first text a client controls (captured cookies and headers, the request
line), so a line is read strictly from its start: the syslog tag must be
HAProxy's, the fields must follow it at their fixed places, and the rest of
the line is never looked at. A request line that looks like another record
("GET /?x= haproxy[1]: ... demoapp/app9 0/0/0/9999/9999 500 ...") is then
just text; so is a record quoted in another program's line, or in an HAProxy
line of another kind (a health check's reason written by the server). Raw
newlines cannot split a record: HAProxy escapes control characters and '"'
in what it logs (#0A, #22).
"""

from __future__ import annotations

import calendar
import math
import os
import re
import time

# The syslog header ends with the program tag at the line's first ': '
# (its timestamps, '20:31:02' or '+00:00', have no space after a colon).
# It must be a whole header, as rsyslog, syslog-ng and journalctl write it:
# [<PRI>] an RFC 3339 or a BSD timestamp, [the host name], HAProxy's tag.
# Another program's line, or text that does not start as a log line does,
# is no record.
HEADER_RE = re.compile(
    r'(?:<[0-9]{1,3}>)?'
    r'(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})?'
    r'|[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)'
    r'(?: [^\s"]+)? haproxy\[[0-9]+\]\Z', re.ASCII)
# HAProxy's proxy and server names ([A-Za-z0-9_.:-], a '~' after an SSL
# frontend's); where no server took the request, a placeholder in <>:
# <NOSRV>, <STATS>, <CACHE>, <PROMEX>, <lua.NAME> for a Lua service.
NAME = r'[A-Za-z0-9_.:-]+'
# The httplog record right after the tag, from the client address to the
# bytes read: what HAProxy writes before any client-controlled text.
HTTPLOG_RE = re.compile(
    r'(?P<client>\S+) '
    r'\[(?P<day>\d{2})/(?P<month>[A-Z][a-z]{2})/(?P<year>\d{4}):(?P<hms>\d{2}:\d{2}:\d{2})\.(?P<ms>\d{3})\] '
    r'(?P<frontend>' + NAME + r'~?) (?P<backend>' + NAME + r')/(?P<server>' + NAME + r'|<' + NAME + r'>) '
    r'(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/\+?(?P<Ta>-?\d+) '
    r'(?P<status>-?\d+) \+?\d+(?: |\Z)', re.ASCII)
# The user routing's route of the request (docs/routing.md): the first capture
# after the fixed fields (captured cookies, termination state, connection and
# queue counts). HAProxy computed it from constants and the routing's own map
# values, never from client text, and only the known shapes are taken.
ROUTE_RE = re.compile(
    r'\S+ \S+ \S{4} \d+/\d+/\d+/\d+/\+?\d+ \d+/\d+ '
    r'\{(?P<route>(?:canary|stable)/(?:all|bucket|share|opt(?:in|out):' + NAME + r'))[|}]', re.ASCII)
MONTHS = dict((name, index) for index, name in enumerate(
    ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'), 1))
# Read the file backwards in blocks of this size until the window is covered.
BLOCK = 1 << 20
# Requests are logged when they end, so a line can be older than the line
# before it by up to the longest request: read this much further back.
SLACK_SECONDS = 120


class LogError(ValueError):
    """Invalid input; the message names the offending value."""


def parse_line(line, utc_offset=None):
    """One log line -> dict, or None when it is not an HTTP request line.

    `accepted`: epoch seconds of the request's accept date. HAProxy writes
    that date in the balancer's local time without a zone, so it is read as
    local time (the module runs on the balancer), or with utc_offset seconds
    when given.
    """
    header, colon, record = line.partition(': ')
    if not colon or not HEADER_RE.match(header):
        return None
    # match(), not search(): anchored right after the tag, never a record
    # found further on in text a client or a server wrote.
    match = HTTPLOG_RE.match(record)
    if not match:
        return None
    month = MONTHS.get(match.group('month'))
    if month is None:
        return None
    hour, minute, second = (int(x) for x in match.group('hms').split(':'))
    fields = (int(match.group('year')), month, int(match.group('day')), hour, minute, second)
    if utc_offset is None:
        accepted = time.mktime(fields + (0, 0, -1))
    else:
        accepted = calendar.timegm(fields + (0, 0, 0)) - utc_offset
    routed = ROUTE_RE.match(record, match.end())
    return {
        'route': routed.group('route') if routed else None,
        'accepted': accepted + int(match.group('ms')) / 1000.0,
        'frontend': match.group('frontend'),
        'backend': match.group('backend'),
        'server': match.group('server'),
        'TR': int(match.group('TR')),
        'Tw': int(match.group('Tw')),
        'Tc': int(match.group('Tc')),
        'Tr': int(match.group('Tr')),
        'Ta': int(match.group('Ta')),
        'status': int(match.group('status')),
    }


def window(now, seconds=60, since=None, until=None):
    """(since, until) in epoch seconds: `since` when given, else the `seconds` before `now`.

    A NaN bound compares false with every date (a NaN `since` lets every
    request in) and an infinite one is no window at all: both are refused,
    naming the value, as is a window of no length. `seconds` is not looked
    at when `since` is given.
    """
    bounds = (('since', since), ('until', until)) + ((('window', seconds),) if since is None else ())
    for name, value in bounds:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise LogError('%s=%r must be a finite number of seconds' % (name, value))
    if since is None and seconds <= 0:
        raise LogError('window=%r must be a number of seconds > 0' % (seconds,))
    return (now - seconds if since is None else since), (now if until is None else until)


def _thin(values, limit):
    """At most `limit` values, evenly spaced over the list (order kept)."""
    if len(values) <= limit:
        return values
    step = len(values) / float(limit)
    return [values[int(i * step)] for i in range(limit)]


def collect(lines, backend, since, until=None, servers=None, max_samples=10000, utc_offset=None, also_backend=None):
    """Per-server timings of the requests `backend` (and `also_backend`, the canary
    backend of a user routing) served, accepted in [since, until].

    Returns {servers: name -> {requests, response_ms (Tr of the answered
    requests), total_ms (Ta), statuses ('2xx'.. -> count), errors_5xx, and for
    requests whose line carries the user routing's route, routes: route ->
    {requests, errors_5xx, response_ms}}, matched, skipped_unparsed, first,
    last}. response_ms and total_ms are thinned evenly to max_samples per
    server and route (counts stay exact).
    """
    if not isinstance(backend, str) or not backend:
        raise LogError('backend %r must be a non-empty name' % (backend,))
    if also_backend is not None and (not isinstance(also_backend, str) or not also_backend):
        raise LogError('also_backend %r must be a non-empty name' % (also_backend,))
    backends = set([backend] + ([also_backend] if also_backend else []))
    if max_samples < 1:
        raise LogError('max_samples %r must be at least 1' % (max_samples,))
    wanted = set(servers) if servers else None
    found = {}
    matched = unparsed = 0
    first = last = None
    for line in lines:
        if 'haproxy[' not in line:
            continue
        entry = parse_line(line, utc_offset)
        if entry is None:
            unparsed += 1
            continue
        # A server in <> is HAProxy's placeholder for none (<NOSRV>, <STATS>...).
        if entry['backend'] not in backends or entry['server'].startswith('<'):
            continue
        if entry['accepted'] < since or (until is not None and entry['accepted'] > until):
            continue
        if wanted is not None and entry['server'] not in wanted:
            continue
        matched += 1
        first = entry['accepted'] if first is None else min(first, entry['accepted'])
        last = entry['accepted'] if last is None else max(last, entry['accepted'])
        item = found.setdefault(entry['server'], {'requests': 0, 'response_ms': [], 'total_ms': [],
                                                  'statuses': {}, 'errors_5xx': 0})
        item['requests'] += 1
        status_class = '%dxx' % (entry['status'] // 100) if entry['status'] >= 100 else 'other'
        item['statuses'][status_class] = item['statuses'].get(status_class, 0) + 1
        if entry['status'] >= 500:
            item['errors_5xx'] += 1
        if entry['Tr'] >= 0:
            item['response_ms'].append(entry['Tr'])
        if entry['Ta'] >= 0:
            item['total_ms'].append(entry['Ta'])
        if entry['route']:
            routes = item.setdefault('routes', {})
            routed = routes.setdefault(entry['route'], {'requests': 0, 'errors_5xx': 0, 'response_ms': []})
            routed['requests'] += 1
            routed['errors_5xx'] += entry['status'] >= 500
            if entry['Tr'] >= 0:
                routed['response_ms'].append(entry['Tr'])
    for item in found.values():
        item['response_ms'] = _thin(item['response_ms'], max_samples)
        item['total_ms'] = _thin(item['total_ms'], max_samples)
        for routed in item.get('routes', {}).values():
            routed['response_ms'] = _thin(routed['response_ms'], max_samples)
    return {'servers': found, 'matched': matched, 'skipped_unparsed': unparsed, 'first': first, 'last': last}


def tail_lines(path, since, utc_offset=None, block=BLOCK):
    """The file's lines from a little before `since` to its end.

    Reads backwards block by block and stops at the first block whose first
    request line is older than since - SLACK_SECONDS, so a large log costs
    only the part the window needs.
    """
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        chunks = []
        while position > 0:
            size = min(block, position)
            position -= size
            handle.seek(position)
            chunks.append(handle.read(size))
            if position == 0:
                break
            oldest = _first_stamp(chunks[-1], utc_offset)
            if oldest is not None and oldest < since - SLACK_SECONDS:
                break
    data = b''.join(reversed(chunks))
    lines = data.decode('utf-8', 'replace').splitlines()
    if position > 0 and lines:
        lines = lines[1:]  # the first line is cut in the middle
    return lines


def _first_stamp(chunk, utc_offset):
    for raw in chunk.split(b'\n')[1:]:
        entry = parse_line(raw.decode('utf-8', 'replace'), utc_offset)
        if entry is not None:
            return entry['accepted']
    return None


def summarize(values):
    """count, p50, p95, max of a list of numbers (None when empty)."""
    if not values:
        return {'count': 0, 'p50': None, 'p95': None, 'max': None}
    ordered = sorted(values)
    count = len(ordered)
    return {'count': count, 'p50': _percentile(ordered, 50), 'p95': _percentile(ordered, 95), 'max': ordered[-1]}


def _percentile(ordered, pct):
    # Nearest rank: a value that was actually observed.
    rank = max(1, int(-(-pct * len(ordered) // 100)))
    return ordered[rank - 1]
