# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Webhook notifications of a rollout: the settings checked, the body of an
event (JSON, or a Slack-compatible body), and its delivery.

Private to grayrelease.canary. Stdlib only.

- ``check_settings()`` checks the canary_notify_* variables; what it returns
  holds neither the URL nor the headers (a Slack webhook's URL is its
  credential, and headers carry tokens): the caller keeps those apart from
  anything that is printed or written.
- ``body()`` is the JSON document of one event (``schema``, ``event``,
  ``text`` and the report's summary), or with ``fmt='slack'`` a body
  Slack's incoming webhooks (and Mattermost, Rocket.Chat...) take:
  ``{"text": ..., "blocks": [...]}``.
- ``deliver()`` POSTs it through _http.open_url (credentials never follow a
  redirect to another origin) with bounded retries: at most ``retries + 1``
  attempts, and ``timeout`` seconds for all of them and the pauses between
  them. It never raises: it returns a delivery record (``attempts``,
  ``status``, ``error``, ``delivered``, ``seconds``) in which no header
  value and no part of the URL but its origin appears.
"""

from __future__ import annotations

import json
import re
import time
from urllib.error import HTTPError
from urllib.parse import urlsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._http import Deadline, open_url
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import MASK, redact_url

SCHEMA = 'grayrelease.canary/notification/v1'
EVENTS = ('run_started', 'step_started', 'step_finished', 'paused', 'rolling_back', 'finished')
FORMATS = ('json', 'slack')
DEFAULT_TIMEOUT = 5
DEFAULT_RETRIES = 2
MAX_TIMEOUT = 300
MAX_RETRIES = 10
# The first pause between two attempts; it doubles, within the deadline.
BACKOFF = 0.5
# A header name as RFC 9110 has it (a token).
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# What a receiver answers is read up to this much (and only to close the exchange cleanly).
MAX_ANSWER = 4096
# 4xx answers that a retry may change; any other 4xx is final (a wrong URL or token).
RETRY_4XX = (408, 425, 429)
ERROR_LENGTH = 300


def origin_text(url):
    """scheme://host[:port] of a URL: all of it that is ever shown (a webhook's path may be its secret)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ''
    if ':' in host:
        host = '[%s]' % host
    return '%s://%s%s' % (parts.scheme.lower(), host, ':%d' % port if port else '')


def _number(name, value, errors, low, high, integer=False):
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str):
        try:
            value = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, (int, float)) or (integer and int(value) != value) or not low <= value <= high \
            or (not integer and value <= 0):
        errors.append('%s=%r must be %s from %s to %s' % (name, value if value is not None else '?',
                                                          'an integer' if integer else 'seconds', low, high))
        return None
    return int(value) if integer else value


def check_settings(url, fmt='json', headers=None, events=None, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES):
    """The canary_notify_* variables checked: (conf, errors).

    conf: {'enabled', 'target' (the URL's origin), 'format', 'events',
    'timeout', 'retries'}, without the URL and the headers. Errors name the
    variable and the bad value (a URL with its credentials redacted; a
    header by its name, never its value). An empty URL turns notifications
    off, whatever else is set.
    """
    errors = []
    url = url.strip() if isinstance(url, str) else url
    conf = {'enabled': False, 'target': '', 'format': 'json', 'events': list(EVENTS),
            'timeout': DEFAULT_TIMEOUT, 'retries': DEFAULT_RETRIES}
    if url in (None, ''):
        return conf, errors
    if not isinstance(url, str):
        errors.append('canary_notify_url must be an http(s) URL, got a %s' % type(url).__name__)
    else:
        parts = urlsplit(url)
        try:
            parts.port
            port_ok = True
        except ValueError:
            port_ok = False
        if parts.scheme.lower() not in ('http', 'https') or not parts.hostname or not port_ok or ' ' in url:
            errors.append('canary_notify_url=%s must be an http:// or https:// URL with a host' % redact_url(url))
        else:
            conf['target'] = origin_text(url)
    if fmt not in FORMATS:
        errors.append('canary_notify_format=%r must be one of %s' % (fmt, ', '.join(FORMATS)))
    else:
        conf['format'] = fmt
    errors += check_headers(headers)
    conf['events'] = _events(events, errors)
    conf['timeout'] = _number('canary_notify_timeout', timeout, errors, 0, MAX_TIMEOUT)
    conf['retries'] = _number('canary_notify_retries', retries, errors, 0, MAX_RETRIES, integer=True)
    conf['enabled'] = not errors
    return conf, errors


def _events(value, errors):
    if value in (None, ''):
        return list(EVENTS)
    names = value.split(',') if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        errors.append('canary_notify_events=%r must be a list of %s' % (value, ', '.join(EVENTS)))
        return list(EVENTS)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in EVENTS]
    if unknown:
        errors.append('canary_notify_events: %s %s not an event; the events are %s' % (
            ', '.join(repr(n) for n in unknown), 'is' if len(unknown) == 1 else 'are', ', '.join(EVENTS)))
    return [e for e in EVENTS if e in names]


def check_headers(headers):
    """canary_notify_headers: a dict of header name -> text. Problems name the header, never its value."""
    if headers in (None, ''):
        return []
    if not isinstance(headers, dict):
        return ['canary_notify_headers must be a dict of header name: value (got a %s)' % type(headers).__name__]
    errors = []
    for name, value in sorted(headers.items(), key=lambda item: str(item[0])):
        if not isinstance(name, str) or not HEADER_NAME_RE.match(name):
            errors.append('canary_notify_headers: %r is not a header name' % (name,))
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)) \
                or re.search(r'[\r\n\x00]', str(value)):
            errors.append('canary_notify_headers: the value of %s must be one line of text' % name)
    return errors


# -- bodies

def _step_text(step):
    if not step:
        return ''
    return 'step %s/%s (%s)' % (step.get('index'), step.get('of'), ', '.join(step.get('hosts') or []) or 'no hosts')


def _score(score):
    return 'none' if score is None else '%.4g' % score


def headline(event, summary):
    """What a person reads first: one line per event."""
    what = '%s %s' % (summary.get('service') or summary.get('backend') or 'service', summary.get('version') or '?')
    frm = ' (from %s)' % summary['previous_version'] if summary.get('previous_version') else ''
    step = summary.get('step') or {}
    if event == 'run_started':
        return 'Canary rollout of %s%s started: %s steps on %s hosts' % (
            what, frm, summary.get('steps', '?'), summary.get('hosts', '?'))
    if event == 'step_started':
        return 'Rollout of %s: %s started' % (what, _step_text(step))
    if event == 'step_finished':
        verdict = ''
        if summary.get('verdict'):
            verdict = ', judged %s (score %s)' % (summary['verdict'], _score(summary.get('score')))
        return 'Rollout of %s: %s %s%s' % (what, _step_text(step), 'done' if step.get('outcome') == 'ok' else
                                           'FAILED', verdict)
    if event == 'paused':
        if summary.get('pause_seconds'):
            return 'Rollout of %s paused for %s s after step %s' % (what, summary['pause_seconds'], step.get('index'))
        return 'Rollout of %s paused after step %s: run it again to continue' % (what, step.get('index'))
    if event == 'rolling_back':
        return 'Rollout of %s is ROLLING BACK %s' % (what, ', '.join(summary.get('hosts_back') or []) or 'nothing')
    if event == 'finished':
        return 'Canary rollout of %s%s finished: %s' % (what, frm, str(summary.get('decision') or '?').upper())
    return 'Rollout of %s: %s' % (what, event)


def body(event, summary, fmt='json', when=None):
    """The body of one event, as a dict (JSON-serialisable).

    summary: the report's summary now (service, backend, version,
    previous_version, run_id, report, step {index, of, hosts, outcome...},
    verdict, score, reason, decision...). when: epoch seconds (None: now).
    """
    when = time.time() if when is None else when
    stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))
    text = headline(event, summary)
    if fmt != 'slack':
        doc = dict(summary)
        doc.update(schema=SCHEMA, event=event, time=stamp, text=text)
        return doc
    return slack_body(event, summary, text, stamp)


def _slack(text):
    """Text from outside as Slack takes it literally: & < > escaped (Slack's own rule)."""
    return str(text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


def slack_body(event, summary, text, stamp):
    """{"text": the headline, "blocks": [headline, the facts, the reason, where the report is]}."""
    facts = []
    step = summary.get('step') or {}
    for label, value in (('Service', summary.get('service')), ('Backend', summary.get('backend')),
                         ('Version', '%s (from %s)' % (summary.get('version') or '?',
                                                       summary.get('previous_version') or '?')),
                         ('Step', _step_text(step) if step else ''),
                         ('Verdict', '%s (score %s)' % (summary['verdict'], _score(summary.get('score')))
                          if summary.get('verdict') else ''),
                         ('Decision', summary.get('decision'))):
        if value:
            facts.append({'type': 'mrkdwn', 'text': '*%s*\n%s' % (label, _slack(value))})
    blocks = [{'type': 'section', 'text': {'type': 'mrkdwn', 'text': '*%s*' % _slack(text)}}]
    if facts:
        blocks.append({'type': 'section', 'fields': facts[:10]})
    if summary.get('reason'):
        reason = str(summary['reason'])
        blocks.append({'type': 'section', 'text': {'type': 'mrkdwn', 'text': 'Why: %s' % _slack(
            reason if len(reason) <= 2900 else reason[:2897] + '...')}})
    context = ['run %s' % _slack(summary.get('run_id') or '?'), stamp]
    if summary.get('report'):
        context.append('report: %s' % _slack(summary['report']))
    blocks.append({'type': 'context', 'elements': [{'type': 'mrkdwn', 'text': ' | '.join(context)}]})
    return {'text': text, 'blocks': blocks}


# -- delivery

def scrub(text, url, headers):
    """An error message without the URL (but its origin), any header value, or URL credentials."""
    text = str(text)
    if url:
        text = text.replace(url, origin_text(url))
        path = urlsplit(url).path
        if len(path) > 1:
            text = text.replace(path, '/' + MASK)
    for value in (headers or {}).values():
        value = str(value)
        if len(value) >= 3:
            text = text.replace(value, MASK)
    text = redact_url(' '.join(text.split()))
    return text if len(text) <= ERROR_LENGTH else text[:ERROR_LENGTH - 3] + '...'


def deliver(url, payload, headers=None, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, clock=time.monotonic,
            sleep=time.sleep, opener=open_url, backoff=BACKOFF, validate_certs=True):
    """POST payload (a dict, sent as JSON) to url; never raises.

    At most retries + 1 attempts, all of them and the pauses between them
    within `timeout` seconds of `clock`: each attempt gets what is left (a
    Deadline cuts a receiver that trickles or hangs). A 2xx answer delivers;
    an error status, no answer or a redirect elsewhere does not (a 4xx other
    than 408/425/429 is not retried: a wrong URL or token stays wrong).
    Returns {'delivered', 'attempts', 'status' (the last HTTP status or
    None), 'error' ('' or why, scrubbed), 'seconds'}.
    """
    record = {'delivered': False, 'attempts': 0, 'status': None, 'error': '', 'seconds': 0.0}
    started = None
    try:
        started = clock()
        data = json.dumps(payload, sort_keys=True).encode('utf-8')
        send_headers = {'Content-Type': 'application/json', 'Accept': 'application/json, text/plain, */*'}
        send_headers.update(dict((str(k), str(v)) for k, v in (headers or {}).items()))
        end = started + float(timeout)
        pause = float(backoff)
        for attempt in range(int(retries) + 1):
            left = end - clock()
            if left <= 0:
                if not record['error']:
                    record['error'] = 'no time left within canary_notify_timeout=%s s' % timeout
                break
            record['attempts'] = attempt + 1
            final = _attempt(url, data, send_headers, left, clock, opener, validate_certs, record)
            if record['delivered'] or final:
                break
            if attempt < int(retries):
                wait = min(pause, end - clock())
                if wait <= 0:
                    break
                sleep(wait)
                pause *= 2
    except Exception as exc:  # pylint: disable=broad-except
        # Never into the rollout: a notifier's bug is its own record.
        record['error'] = 'notifier error: %s: %s' % (type(exc).__name__, exc)
    record['error'] = scrub(record['error'], url, headers) if record['error'] else ''
    try:
        if started is not None:
            record['seconds'] = round(max(0.0, clock() - started), 3)
    except Exception:  # pylint: disable=broad-except
        pass
    return record


def _attempt(url, data, headers, left, clock, opener, validate_certs, record):
    """One POST within `left` seconds; fills record; True when retrying cannot help."""
    deadline = Deadline(left, clock)
    try:
        response = opener(url, headers=headers, timeout=left, validate_certs=validate_certs, deadline=deadline,
                          data=data)
        try:
            status = getattr(response, 'status', None) or response.getcode()
            response.read(MAX_ANSWER)
            moved = response.geturl() if hasattr(response, 'geturl') else url
        finally:
            response.close()
        record['status'] = status
        if moved and moved != url:
            record['error'] = 'the webhook redirected to %s (answered %s there); give the URL that answers' % (
                origin_text(moved), status)
            return True
        if 200 <= status < 300:
            record['delivered'] = True
            record['error'] = ''
            return True
        record['error'] = 'HTTP %s' % status
        return False
    except HTTPError as exc:
        record['status'] = exc.code
        record['error'] = 'HTTP %s %s' % (exc.code, exc.reason or '')
        exc.close()
        return 400 <= exc.code < 500 and exc.code not in RETRY_4XX
    except Exception as exc:  # pylint: disable=broad-except
        record['status'] = None
        if deadline.passed():
            record['error'] = 'no answer within canary_notify_timeout (%s: %s)' % (type(exc).__name__, exc)
        else:
            record['error'] = '%s: %s' % (type(exc).__name__, exc)
        return False
    finally:
        deadline.close()
