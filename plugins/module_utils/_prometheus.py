# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus as a source of canary metrics (module prometheus_query).

Private to grayrelease.canary. Stdlib only: PromQL templates with
placeholders for one side (canary or baseline), and the HTTP API's
query / query_range calls and answers, through _http (proxies from the
environment; a redirect to another origin drops the headers and the
URL's user:password@).

Placeholders in a query: $instances and $servers (a regular expression
matching exactly the side's instance labels or HAProxy server names, for
`=~"..."`), $backend, $window (the analysis window as a duration, e.g.
`30s`) and $interval (one analysis interval). ${name} works too, $$ is a
literal $. A $ followed by any other name is an error (a typo would
otherwise reach Prometheus as a label value that matches nothing).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import urllib.error
import urllib.parse

from ansible_collections.grayrelease.canary.plugins.module_utils._http import open_url
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact_url

PLACEHOLDERS = ('instances', 'servers', 'backend', 'window', 'interval')
PLACEHOLDER_RE = re.compile(r'\$(?:\$|\{(\w+)\}|([A-Za-z_]\w*))')
# Characters a label value may carry unescaped in the generated regex; any
# other character becomes a one-character class ([.]), which needs no
# backslash and so reads the same inside "..." and `...` PromQL strings.
PLAIN_RE = re.compile(r'[A-Za-z0-9_:-]')
SAFE_VALUE_RE = re.compile(r'^[A-Za-z0-9_.:/@-]+\Z')


class PrometheusError(ValueError):
    """Invalid input or a failed query; the message names the offending value,
    any credentials in it redacted (messages name the Prometheus URL)."""

    def __init__(self, msg):
        super(PrometheusError, self).__init__(redact_url(msg))


def alternation(values):
    """A regex matching exactly the given label values (PromQL anchors =~ itself)."""
    if not values:
        # Matches no label value at all: a side without hosts has no data.
        return '^$'
    parts = []
    for value in values:
        if not isinstance(value, str) or not SAFE_VALUE_RE.match(value):
            raise PrometheusError('label value %r may only contain letters, digits and _ . : / @ -' % (value,))
        parts.append(''.join(ch if PLAIN_RE.match(ch) else '[%s]' % ch for ch in value))
    return '|'.join(parts)


def duration(seconds):
    """Seconds -> a PromQL duration (whole seconds, at least 1s)."""
    return '%ds' % max(1, int(math.ceil(seconds)))


def substitute(query, values):
    """The query with every placeholder replaced from `values` (name -> text)."""
    if not isinstance(query, str) or not query.strip():
        raise PrometheusError('query %r must be a non-empty PromQL string' % (query,))

    def replace(match):
        if match.group(0) == '$$':
            return '$'
        name = match.group(1) or match.group(2)
        if name not in values:
            raise PrometheusError('query %r: unknown placeholder $%s (known: %s; $$ is a literal $)'
                                  % (query, name, ', '.join('$' + p for p in PLACEHOLDERS)))
        return values[name]

    return PLACEHOLDER_RE.sub(replace, query)


def check_template(query):
    """Raise PrometheusError for a query whose placeholders are not all known."""
    substitute(query, dict((name, 'x') for name in PLACEHOLDERS))


def api_url(base, query, start=None, end=None, step=None, at=None):
    """The HTTP API URL of an instant query (at) or a range query (start, end, step)."""
    if not isinstance(base, str) or not re.match(r'^https?://[^/\s]+', base):
        raise PrometheusError('Prometheus URL %r must be http(s)://HOST[:PORT][/PATH]' % (base,))
    root = base.rstrip('/')
    if start is not None:
        params = {'query': query, 'start': '%.3f' % start, 'end': '%.3f' % end, 'step': '%gs' % step}
        return '%s/api/v1/query_range?%s' % (root, urllib.parse.urlencode(params))
    params = {'query': query}
    if at is not None:
        params['time'] = '%.3f' % at
    return '%s/api/v1/query?%s' % (root, urllib.parse.urlencode(params))


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_response(body):
    """Prometheus API answer -> {'values': [...], 'series': n}.

    A range answer (matrix) gives every finite value of every series, in
    order; an instant answer (vector or scalar) gives one value per series.
    NaN and infinite values (a rate over no requests, a quantile of an
    empty histogram) are dropped: they are no data.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise PrometheusError('the answer is not JSON: %s' % exc)
    if not isinstance(doc, dict):
        raise PrometheusError('the answer is not a JSON object: %r' % (doc,))
    if doc.get('status') != 'success':
        raise PrometheusError('%s: %s' % (doc.get('errorType') or 'error', doc.get('error') or body[:200]))
    data = doc.get('data') or {}
    kind = data.get('resultType')
    result = data.get('result')
    values = []
    if kind == 'matrix':
        for series in result or []:
            values.extend(v for v in (_number(point[1]) for point in series.get('values') or []) if v is not None)
        return {'values': values, 'series': len(result or [])}
    if kind == 'vector':
        for series in result or []:
            value = _number((series.get('value') or [None, None])[1])
            if value is not None:
                values.append(value)
        return {'values': values, 'series': len(result or [])}
    if kind == 'scalar':
        value = _number((result or [None, None])[1])
        return {'values': [] if value is None else [value], 'series': 1}
    raise PrometheusError('unexpected result type %r' % (kind,))


def fetch(url, timeout=10.0, headers=None, opener=open_url):
    """GET the URL; returns the body text. Prometheus's own error answers are parsed, not raised."""
    try:
        with opener(url, headers=dict(headers or {}), timeout=timeout) as answer:
            return answer.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as exc:
        # 400 / 422 / 503 carry a JSON body that says what is wrong with the query.
        body = exc.read().decode('utf-8', 'replace')
        if body.lstrip().startswith('{'):
            return body
        raise PrometheusError('HTTP %s from %s' % (exc.code, url.split('?')[0]))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise PrometheusError('cannot reach %s: %s' % (url.split('?')[0], getattr(exc, 'reason', exc)))


def run_queries(base, queries, end, window, timeout=10.0, headers=None, opener=open_url):
    """Evaluate each query over [end - window, end]; returns name -> result.

    queries: list of {name, query, type: 'range' (every point, `step`
    seconds apart) or 'instant' (at `end`)}. A query that fails gives
    {'error': why, 'values': []} instead of stopping the others: a metric
    without data is the judge's business (nodata, or must_have_data).
    """
    results = {}
    for item in queries:
        name = item['name']
        try:
            if item.get('type', 'range') == 'range':
                step = float(item.get('step') or max(1.0, window / 30.0))
                url = api_url(base, item['query'], start=end - window, end=end, step=step)
            else:
                url = api_url(base, item['query'], at=end)
            answer = parse_response(fetch(url, timeout, headers, opener))
            results[name] = dict(answer, query=item['query'])
        except PrometheusError as exc:
            results[name] = {'values': [], 'series': 0, 'query': item['query'], 'error': str(exc)}
    return results
