# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Webhook notifications (module_utils/_notify): the settings, the bodies
(JSON, Slack), the delivery's bounds on a fake clock (attempts, total
deadline, backoff), that no header value or URL path ever appears in a
delivery record, that it never raises, and the same against real receivers
on loopback (an answer, a 500, a receiver that hangs, a redirect to another
origin). Then the engine's side (_engine/notify): which events a state has
due, in order, each once."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine
from ansible_collections.grayrelease.canary.plugins.module_utils import _notify
from ansible_collections.grayrelease.canary.plugins.module_utils._notify import EVENTS, body, check_settings, deliver

# The engine's own advance(), wrapped by the engine-side tests below.
ORIGINAL_ADVANCE = engine.advance
SECRET = 'Bearer s3cr3t-t0ken-value'
HEADERS = {'Authorization': SECRET, 'X-Team': 'team-secret-42'}
SUMMARY = {'service': 'demoapp', 'backend': 'demoapp', 'version': 'v2', 'previous_version': 'v1', 'run_id': 'ab12cd34',
           'report': '/tmp/reports/report.json', 'decision': None, 'verdict': 'fail', 'score': 40.0,
           'reason': 'canary judged fail (score 40): probe_error_ratio 50% vs 0% <script>',
           'step': {'index': 1, 'of': 3, 'hosts': ['app1'], 'outcome': 'failed', 'canary': True}}


# -- settings

def test_notifications_are_off_without_a_url():
    conf, errors = check_settings('', 'nonsense', 'not a dict', ['nope'], -1, 99)
    assert errors == [] and conf['enabled'] is False


def test_good_settings_keep_neither_url_path_nor_headers():
    conf, errors = check_settings('https://u:p@hooks.example.com:8443/services/T0/B0/XYZ?token=t', 'slack', HEADERS,
                                  'finished, run_started', '2.5', '3')
    assert errors == []
    assert conf == {'enabled': True, 'target': 'https://hooks.example.com:8443', 'format': 'slack',
                    'events': ['run_started', 'finished'], 'timeout': 2.5, 'retries': 3}
    text = json.dumps(conf)
    assert 'XYZ' not in text and SECRET not in text and 'team-secret' not in text and 'u:p' not in text


@pytest.mark.parametrize('kwargs, needle', [
    ({'url': 'ftp://files.example.com/x'}, 'canary_notify_url=ftp://files.example.com/x'),
    ({'url': 'file:///etc/passwd'}, 'canary_notify_url=file:///etc/passwd'),
    ({'url': 'http://'}, 'with a host'),
    ({'url': 'hooks.example.com/x'}, 'canary_notify_url=hooks.example.com/x'),
    ({'url': 'http://h:99999/'}, 'canary_notify_url=http://h:99999/'),
    ({'fmt': 'teams'}, "canary_notify_format='teams' must be one of json, slack"),
    ({'events': ['finished', 'step_done']}, "'step_done' is not an event"),
    ({'events': 7}, 'canary_notify_events=7'),
    ({'timeout': 0}, 'canary_notify_timeout=0'),
    ({'timeout': 'soon'}, 'canary_notify_timeout'),
    ({'retries': -1}, 'canary_notify_retries=-1'),
    ({'retries': 2.5}, 'canary_notify_retries'),
    ({'headers': ['Authorization: x']}, 'canary_notify_headers must be a dict'),
    ({'headers': {'Bad Name': 'x'}}, "'Bad Name' is not a header name"),
])
def test_bad_settings_are_refused_naming_the_value(kwargs, needle):
    args = dict(url='https://hooks.example.com/x', fmt='json', headers={}, events=None, timeout=5, retries=2)
    args.update(kwargs)
    conf, errors = check_settings(**args)
    assert conf['enabled'] is False
    assert any(needle in e for e in errors), errors


def test_a_bad_header_value_is_named_by_its_header_never_shown():
    conf, errors = check_settings('https://h.example/x', headers={'Authorization': 'Bearer abc\r\nX-Evil: 1'})
    assert errors == ['canary_notify_headers: the value of Authorization must be one line of text']
    assert 'abc' not in errors[0]


def test_url_credentials_are_redacted_in_the_refusal():
    conf, errors = check_settings('gopher://user:pa55word@h.example/x?token=tok')
    assert errors and 'pa55word' not in errors[0] and 'tok' not in errors[0].split('?')[-1].replace('token', '')


# -- bodies

@pytest.mark.parametrize('event', EVENTS)
def test_json_body_of_every_event_carries_the_summary(event):
    doc = body(event, SUMMARY, 'json', when=0)
    assert doc['schema'] == _notify.SCHEMA and doc['event'] == event and doc['time'] == '1970-01-01T00:00:00Z'
    for key in ('service', 'backend', 'version', 'previous_version', 'run_id', 'report', 'verdict', 'score', 'reason',
                'decision', 'step'):
        assert doc[key] == SUMMARY[key], key
    assert isinstance(doc['text'], str) and 'demoapp v2' in doc['text']
    json.dumps(doc)


def test_headlines_say_what_happened():
    assert body('step_finished', SUMMARY)['text'] == \
        'Rollout of demoapp v2: step 1/3 (app1) FAILED, judged fail (score 40)'
    assert body('finished', dict(SUMMARY, decision='rolled_back'))['text'] == \
        'Canary rollout of demoapp v2 (from v1) finished: ROLLED_BACK'
    assert body('rolling_back', dict(SUMMARY, hosts_back=['app1']))['text'] == \
        'Rollout of demoapp v2 is ROLLING BACK app1'
    assert 'paused for 30 s after step 1' in body('paused', dict(SUMMARY, pause_seconds=30))['text']
    assert 'run it again' in body('paused', SUMMARY)['text']
    assert body('run_started', dict(SUMMARY, steps=3, hosts=6))['text'] == \
        'Canary rollout of demoapp v2 (from v1) started: 3 steps on 6 hosts'


def test_slack_body_has_text_and_blocks_with_the_words_a_person_reads():
    doc = body('step_finished', SUMMARY, 'slack', when=0)
    assert set(doc) == {'text', 'blocks'}
    assert doc['text'].startswith('Rollout of demoapp v2: step 1/3')
    words = json.dumps(doc['blocks'])
    for needle in ('v2 (from v1)', 'fail (score 40)', 'run ab12cd34', '/tmp/reports/report.json', 'Why: canary judged fail'):
        assert needle in words, needle
    # Slack's escaping: text from outside cannot make a link or mention.
    assert '<script>' not in words and '&lt;script&gt;' in words
    assert [b['type'] for b in doc['blocks']] == ['section', 'section', 'section', 'context']


# -- delivery, on a fake clock

class FakeClock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


class Answer(object):
    def __init__(self, status=200, url=None):
        self.status = status
        self.url = url

    def read(self, size=-1):
        return b'ok'

    def geturl(self):
        return self.url

    def close(self):
        pass


class FakeOpener(object):
    """Plays a script of outcomes: an int (HTTP status), an exception, or ('hang', seconds)."""

    def __init__(self, clock, script):
        self.clock = clock
        self.script = list(script)
        self.calls = []

    def __call__(self, url, headers=None, timeout=None, validate_certs=True, deadline=None, data=None):
        self.calls.append({'url': url, 'headers': headers, 'timeout': timeout, 'data': data})
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, tuple):
            # The receiver says nothing: the attempt ends at its timeout.
            self.clock.now += min(step[1], timeout)
            raise TimeoutError('timed out')
        if isinstance(step, Exception):
            raise step  # pylint: disable=raising-bad-type  # a scripted failure, an int is a status
        if step >= 400:
            from urllib.error import HTTPError
            raise HTTPError(url, step, 'Server Error', {}, None)
        return Answer(step, url)


def _deliver(script, **kwargs):
    clock = FakeClock()
    opener = FakeOpener(clock, script)
    url = kwargs.pop('url', 'https://hooks.example.com/services/T0/B0/PATHSECRET')
    record = deliver(url, {'event': 'x'}, HEADERS, clock=clock, sleep=clock.sleep, opener=opener, **kwargs)
    return record, opener, clock


def test_delivered_at_the_first_answer_with_the_headers_and_the_json_body():
    record, opener, clock = _deliver([204])
    assert record == {'delivered': True, 'attempts': 1, 'status': 204, 'error': '', 'seconds': 0.0}
    call = opener.calls[0]
    assert call['headers']['Authorization'] == SECRET and call['headers']['Content-Type'] == 'application/json'
    assert json.loads(call['data'].decode()) == {'event': 'x'}


def test_a_500_is_retried_with_backoff_and_the_retries_are_bounded():
    record, opener, clock = _deliver([500, 500, 500, 500, 500], retries=2, timeout=60)
    assert record['delivered'] is False and record['attempts'] == 3 and record['status'] == 500
    assert record['error'].startswith('HTTP 500')
    assert clock.sleeps == [0.5, 1.0]
    assert len(opener.calls) == 3


def test_a_retry_that_succeeds_delivers():
    record, opener, clock = _deliver([503, ConnectionRefusedError(111, 'Connection refused'), 200], retries=3)
    assert record['delivered'] is True and record['attempts'] == 3 and record['error'] == ''


def test_a_final_4xx_is_not_retried_but_429_is():
    record, opener, clock = _deliver([404, 200], retries=3)
    assert record['attempts'] == 1 and record['status'] == 404 and not record['delivered']
    record, opener, clock = _deliver([429, 200], retries=3)
    assert record['attempts'] == 2 and record['delivered']


def test_a_hanging_receiver_is_cut_at_the_total_deadline():
    record, opener, clock = _deliver([('hang', 100)] * 10, retries=5, timeout=3)
    assert record['delivered'] is False
    # The first attempt had all 3 s and used them: nothing is left for another.
    assert record['attempts'] == 1 and record['seconds'] == 3.0
    assert opener.calls[0]['timeout'] == 3
    assert 'no answer within canary_notify_timeout' in record['error'] or 'no time left' in record['error']


def test_each_attempt_gets_only_what_is_left_of_the_deadline():
    record, opener, clock = _deliver([('hang', 1.5), 500, 200], retries=5, timeout=4)
    assert [round(c['timeout'], 3) for c in opener.calls] == [4.0, 2.0, 1.0]
    assert record['delivered'] and record['seconds'] <= 4


def test_the_backoff_never_sleeps_past_the_deadline():
    record, opener, clock = _deliver([500] * 20, retries=10, timeout=2)
    assert clock.now - 1000.0 <= 2.0 + 1e-9
    assert record['attempts'] < 11 and not record['delivered']


def test_no_header_value_or_url_path_ever_appears_in_a_record():
    url = 'https://user:pw@hooks.example.com/services/T0/B0/PATHSECRET?token=querysecret'
    boom = OSError('cannot reach %s with Authorization: %s, X-Team: team-secret-42' % (url, SECRET))
    record, opener, clock = _deliver([boom], retries=0, url=url)
    text = json.dumps(record)
    for secret in (SECRET, 's3cr3t', 'team-secret-42', 'PATHSECRET', 'querysecret', 'user:pw'):
        assert secret not in text, (secret, text)
    assert 'https://hooks.example.com' in record['error']


def test_it_never_raises_whatever_happens():
    def broken_opener(*args, **kwargs):
        raise RuntimeError('the opener itself is broken: %s' % SECRET)

    record = deliver('https://h.example/x', {'event': 'x'}, HEADERS, opener=broken_opener, clock=FakeClock(),
                     sleep=lambda s: None, retries=1)
    assert record['delivered'] is False and record['attempts'] == 2 and SECRET not in record['error']
    # A body that cannot be serialised, a clock that fails: a record, not an exception.
    record = deliver('https://h.example/x', {'event': object()}, HEADERS, opener=broken_opener)
    assert record['delivered'] is False and 'notifier error: TypeError' in record['error']

    def bad_clock():
        raise ValueError('no clock')

    record = deliver('https://h.example/x', {'event': 'x'}, HEADERS, clock=bad_clock)
    assert record['delivered'] is False and 'notifier error' in record['error']


def test_a_redirect_elsewhere_is_not_a_delivery():
    clock = FakeClock()

    def moved(url, **kwargs):
        return Answer(200, 'https://elsewhere.example.net/landing')

    record = deliver('https://h.example/x', {'event': 'x'}, HEADERS, clock=clock, sleep=clock.sleep, opener=moved)
    assert record['delivered'] is False and record['attempts'] == 1
    assert 'redirected to https://elsewhere.example.net' in record['error']


# -- delivery against real receivers on loopback

class Receiver(object):
    """A webhook receiver on 127.0.0.1: mode 'ok', 'fail' (500), 'hang' (answers after
    `hang` s, at most 10) or 'redirect' (302 to `location`); keeps what it got."""

    def __init__(self, mode='ok', hang=10.0, location=''):
        self.mode, self.hang, self.location = mode, hang, location
        self.got = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'

            def log_message(self, *args):
                pass

            def _take(self):
                size = int(self.headers.get('Content-Length') or 0)
                receiver.got.append({'method': self.command, 'path': self.path,
                                     'headers': dict((k.lower(), v) for k, v in self.headers.items()),
                                     'body': self.rfile.read(size) if size else b''})

            def do_POST(self):  # pylint: disable=invalid-name
                self._take()
                if receiver.mode == 'hang':
                    receiver.release.wait(min(receiver.hang, 10.0))
                    return
                if receiver.mode == 'redirect':
                    self.send_response(302)
                    self.send_header('Location', receiver.location)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                status = 500 if receiver.mode == 'fail' else 200
                self.send_response(status)
                self.send_header('Content-Length', '2')
                self.end_headers()
                self.wfile.write(b'ok')

            do_GET = do_POST

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kwargs):
        made.append(Receiver(*args, **kwargs))
        return made[-1]
    yield make
    for item in made:
        item.close()


def test_real_receiver_gets_the_body_and_the_headers(receiver):
    rx = receiver('ok')
    record = deliver(rx.url + '/hook/PATHSECRET', body('finished', dict(SUMMARY, decision='promoted')), HEADERS)
    assert record['delivered'] and record['status'] == 200 and record['attempts'] == 1
    got = rx.got[0]
    assert got['method'] == 'POST' and got['path'] == '/hook/PATHSECRET'
    assert got['headers']['authorization'] == SECRET and got['headers']['content-type'] == 'application/json'
    assert json.loads(got['body'].decode())['decision'] == 'promoted'


def test_real_receiver_answering_500_is_tried_retries_plus_one_times(receiver):
    rx = receiver('fail')
    record = deliver(rx.url + '/hook', {'event': 'x'}, HEADERS, retries=2, timeout=10, backoff=0.05)
    assert record == dict(record, delivered=False, attempts=3, status=500)
    assert len(rx.got) == 3


def test_real_receiver_that_hangs_costs_at_most_the_timeout(receiver):
    rx = receiver('hang', hang=10)
    started = time.monotonic()
    record = deliver(rx.url + '/hook', {'event': 'x'}, HEADERS, retries=3, timeout=1.0)
    took = time.monotonic() - started
    assert record['delivered'] is False and record['status'] is None
    assert took < 1.8, took
    assert 'no answer' in record['error'] or 'no time left' in record['error'], record


def test_a_redirect_to_another_origin_carries_no_header_and_is_not_delivered(receiver):
    other = receiver('ok')
    rx = receiver('redirect', location=other.url + '/landing')
    record = deliver(rx.url + '/hook', {'event': 'x'}, HEADERS, retries=0)
    assert record['delivered'] is False
    # urllib follows a POST's 302 as a GET; the other origin never sees a credential.
    assert [g['method'] for g in other.got] == ['GET']
    assert 'authorization' not in other.got[0]['headers'] and 'x-team' not in other.got[0]['headers']
    assert 'redirected to %s' % other.url in record['error']


# -- the engine's side: which events a run reaches, in order, each once

def _engine_run(monkeypatch, fleet_setup=None, deliver_with=None, **over):
    """test_engine's simulated run, with notify() after every coordinator call, as the action plugin makes it."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_engine import FakeFleet, run  # pylint: disable=import-outside-toplevel
    from ansible_collections.grayrelease.canary.plugins.module_utils._engine.notify import notify

    sent = []

    def send(event, summary):
        sent.append((event, summary))
        if deliver_with:
            return deliver_with(event, summary)
        return {'delivered': True, 'attempts': 1, 'status': 200, 'error': '', 'seconds': 0.01}

    original = ORIGINAL_ADVANCE

    def advance(state, op, call, now):
        original(state, op, call, now)
        notify(state, 5000.0, send, {'report': '/r/report.json', 'report_run': '/r/runs/x/report.json'})
        return state

    monkeypatch.setattr(engine, 'advance', advance)
    fleet = FakeFleet()
    if fleet_setup:
        fleet_setup(fleet)
    over.setdefault('canary_notify_url', 'https://hooks.example.com/services/SECRETPATH')
    state = run(fleet, **over)
    return state, sent


def _events(sent):
    return [(e, (s['step'] or {}).get('index')) for e, s in sent]


def test_a_promoted_run_sends_every_event_in_order_once(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_steps=[1, '50%', '100%'], canary_max_unavailable=3)
    assert state['decision'] == 'promoted'
    assert _events(sent) == [('run_started', None), ('step_started', 1), ('step_finished', 1), ('step_started', 2),
                             ('step_finished', 2), ('step_started', 3), ('step_finished', 3), ('finished', None)]
    first = sent[0][1]
    assert first['version'] == 'v2' and first['previous_version'] == 'v1' and first['service'] == 'demoapp'
    assert first['steps'] == 3 and first['hosts'] == 6 and first['report'] == '/r/report.json'
    canary = sent[2][1]
    assert canary['verdict'] == 'pass' and canary['step']['canary'] is True and canary['step']['outcome'] == 'ok'
    assert canary['step']['hosts'] == ['app1'] and canary['score'] == 100
    last = sent[-1][1]
    assert last['decision'] == 'promoted' and last['hosts'] == dict((h, 'v2') for h in state['app_hosts'])
    records = state['notifications']
    assert [r['event'] for r in records] == [e for e, dummy in sent]
    assert all(r['delivered'] for r in records)
    section = engine_report_section(state)
    assert section['target'] == 'https://hooks.example.com' and 'SECRETPATH' not in json.dumps(section)


def engine_report_section(state):
    from ansible_collections.grayrelease.canary.plugins.module_utils._engine.notify import report_section
    return report_section(state)


def test_a_failing_canary_sends_its_verdict_then_the_rollback_then_the_decision(monkeypatch):
    def bad(fleet):
        fleet.bad_canary = True
    state, sent = _engine_run(monkeypatch, fleet_setup=bad)
    assert state['decision'] == 'rolled_back'
    assert _events(sent) == [('run_started', None), ('step_started', 1), ('step_finished', 1),
                             ('rolling_back', None), ('finished', None)]
    judged = sent[2][1]
    assert judged['verdict'] == 'fail' and judged['step']['outcome'] == 'failed' and 'judged fail' in judged['reason']
    assert sent[3][1]['hosts_back'] == ['app1']
    assert sent[4][1]['decision'] == 'rolled_back' and sent[4][1]['verdict'] == 'fail'


def test_pauses_are_told(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_pause=5, canary_steps=[1, '100%'], canary_max_unavailable=3)
    assert _events(sent)[:4] == [('run_started', None), ('step_started', 1), ('step_finished', 1), ('paused', 1)]
    assert sent[3][1]['pause_seconds'] == 5
    state, sent = _engine_run(monkeypatch, canary_pause='manual', canary_steps=[1, '100%'], canary_max_unavailable=3)
    assert _events(sent) == [('run_started', None), ('step_started', 1), ('step_finished', 1), ('paused', 1),
                             ('finished', None)]
    assert sent[3][1]['pause_seconds'] is None and 'canary_pause=manual' in sent[3][1]['reason']
    assert sent[-1][1]['decision'] == 'paused'


def test_only_the_chosen_events_are_sent_and_a_refused_run_tells_only_its_end(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_notify_events=['finished', 'rolling_back'])
    assert _events(sent) == [('finished', None)]
    state, sent = _engine_run(monkeypatch, canary_steps=['150%'])
    assert state['decision'] == 'failed'
    assert _events(sent) == [('finished', None)] and 'bad input' in sent[0][1]['reason']


def test_bad_notify_settings_refuse_the_run_before_anything_changes(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_notify_url='ftp://hooks.example.com/x', canary_notify_format='xml')
    assert state['decision'] == 'failed' and sent == []
    reason = state['halt']['reason']
    assert reason.startswith('bad input, nothing was changed')
    assert 'canary_notify_url=ftp://hooks.example.com/x' in reason and "canary_notify_format='xml'" in reason
    assert state['lock_held'] is False and state['switched'] == [] and state['steps'] == []


def test_undelivered_notifications_change_nothing_in_the_run(monkeypatch):
    def failing(event, summary):
        return {'delivered': False, 'attempts': 3, 'status': 500, 'error': 'HTTP 500', 'seconds': 1.5}
    state, sent = _engine_run(monkeypatch, deliver_with=failing, canary_steps=[1, '100%'], canary_max_unavailable=3)
    assert state['decision'] == 'promoted'
    assert len(state['notifications']) == 6 and not any(r['delivered'] for r in state['notifications'])


def test_no_url_and_check_mode_send_nothing(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_notify_url='')
    assert state['decision'] == 'promoted' and sent == [] and 'notifications' not in state
    state, sent = _engine_run(monkeypatch, check_mode=True)
    assert sent == []


def test_report_and_markdown_list_the_deliveries_without_secrets(monkeypatch):
    state, sent = _engine_run(monkeypatch, canary_steps=[1, '100%'], canary_max_unavailable=3)
    doc = engine.report(state, lambda t: 'T')
    assert doc['notifications']['enabled'] is True
    assert [d['event'] for d in doc['notifications']['deliveries']][0] == 'run_started'
    md = engine.report_markdown(doc)
    assert '### Notifications' in md and '- run_started to https://hooks.example.com: delivered after 1 attempt' in md
    assert 'SECRETPATH' not in md and 'SECRETPATH' not in json.dumps(doc)
