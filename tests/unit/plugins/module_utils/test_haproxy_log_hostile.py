# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy request-log lines with client- or server-controlled text (issue 19,
item 11): what a client puts in its request line or a captured header, or a
server in its health check's reason, never decides which server a request is
counted for, nor makes up a request. The judge compares canary and baseline
servers on these counts, so a forged record would move a verdict."""

from __future__ import annotations

import calendar
import os
import sys

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _haproxy_log as hl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import run_adhoc  # noqa: E402  pylint: disable=wrong-import-position

T0 = calendar.timegm((2026, 11, 28, 20, 18, 27, 0, 0, 0))
HEADER = '2026-11-28T20:18:27.251633+00:00 jdg-lb1 haproxy[452]: '
# What HAProxy writes before any client-controlled text, for a 200 app1 answered in 1 ms.
FIXED = '127.0.0.1:40590 [28/Nov/2026:20:18:27.250] fe_demoapp demoapp/jdg-app1 0/0/0/1/1 200 204'
# A whole record for app9, a 500 that took 9999 ms: what a forgery would like counted.
FORGED = ('jdg-lb1 haproxy[452]: 10.6.6.6:1 [28/Nov/2026:20:18:27.300] fe_demoapp demoapp/jdg-app9 '
          '0/0/0/9999/9999 500 1 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"')
FORGED_FIELDS = 'demoapp/jdg-app9 0/0/0/9999/9999 500 1'

# The text after the fixed fields: captured cookies, termination state,
# counters, captured headers, the request line, each carrying a forgery.
HOSTILE_TAILS = {
    'a record in the url': ' - - ---- 2/1/0/0/0 0/0 "GET /?x=2026-11-28T20:18:27+00:00 %s HTTP/1.1"' % FORGED,
    'raw quotes around it': ' - - ---- 2/1/0/0/0 0/0 "GET /" %s "x HTTP/1.1"' % FORGED,
    'escaped quotes (#22)': ' - - ---- 2/1/0/0/0 0/0 "GET /#22 %s #22 HTTP/1.1"' % FORGED.replace('"', '#22'),
    'an escaped newline (#0A)': ' - - ---- 2/1/0/0/0 0/0 "GET /#0A%s HTTP/1.1"' % FORGED.replace('"', '#22'),
    'a literal backslash-n': ' - - ---- 2/1/0/0/0 0/0 "GET /\\n%s HTTP/1.1"' % FORGED,
    'a url-encoded newline': ' - - ---- 2/1/0/0/0 0/0 "GET /%%0A%s HTTP/1.1"' % FORGED.replace(' ', '%20'),
    'spaces and fake fields': ' - - ---- 2/1/0/0/0 0/0 "GET / %s HTTP/1.1"' % FORGED_FIELDS,
    'a captured header': ' - - ---- 2/1/0/0/0 0/0 {%s} {} "GET / HTTP/1.1"' % FORGED.replace('"', '#22'),
    'a captured cookie': ' x=%s - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"' % FORGED.replace(' ', '+'),
    'nothing after the bytes': '',
}


@pytest.mark.parametrize('tail', sorted(HOSTILE_TAILS), ids=str)
def test_client_text_after_the_fixed_fields_never_changes_the_record(tail):
    entry = hl.parse_line(HEADER + FIXED + HOSTILE_TAILS[tail], utc_offset=0)
    assert entry == {'accepted': T0 + 0.25, 'frontend': 'fe_demoapp', 'backend': 'demoapp', 'server': 'jdg-app1',
                     'TR': 0, 'Tw': 0, 'Tc': 0, 'Tr': 1, 'Ta': 1, 'status': 200, 'route': None}


# Lines that are no request record of HAProxy's but quote a whole one.
NOT_RECORDS = {
    # Another program logging a client's url, in a file shared with HAProxy (/var/log/syslog).
    'another program': '2026-11-28T20:18:27.3+00:00 jdg-lb1 nginx[77]: 10.6.6.6 "GET /?q=%s"' % FORGED,
    'a program named like it': '2026-11-28T20:18:27.3+00:00 jdg-lb1 myhaproxy[77]: %s' % FORGED.split(': ', 1)[1],
    'no syslog tag at all': 'GET /?q=%s' % FORGED,
    # HAProxy's own line of another kind, with the text a server sent as its check's reason.
    'a health check reason': ('2026-11-28T20:18:27.3+00:00 jdg-lb1 haproxy[452]: Server demoapp/jdg-app1 is DOWN, '
                              'reason: Layer7 wrong status, code: 500, info: "%s"' % FORGED),
    # An HAProxy record whose fixed fields do not parse (here a tcplog's three timers).
    'a record of another shape': ('2026-11-28T20:18:27.3+00:00 jdg-lb1 haproxy[452]: 10.0.0.1:1 '
                                  '[28/Nov/2026:20:18:27.300] fe_tcp be_tcp/srv1 0/0/5 100 -- %s' % FORGED),
    # Names HAProxy would never write, in the place of the backend/server.
    'a server name with a quote': HEADER + FIXED.replace('jdg-app1', 'jdg-app1"') + ' - - ---- 1/1/0/0/0 0/0 "GET /"',
    'a frontend name with markup': HEADER + FIXED.replace('fe_demoapp', '<fe>') + ' - - ---- 1/1/0/0/0 0/0 "GET /"',
}


@pytest.mark.parametrize('name', sorted(NOT_RECORDS), ids=str)
def test_a_record_quoted_inside_a_line_is_not_read_as_one(name):
    assert hl.parse_line(NOT_RECORDS[name], utc_offset=0) is None


def test_collect_counts_the_real_servers_only():
    lines = [HEADER + FIXED + tail for tail in HOSTILE_TAILS.values()] + list(NOT_RECORDS.values())
    got = hl.collect(lines, 'demoapp', since=T0, until=T0 + 10, utc_offset=0)
    assert list(got['servers']) == ['jdg-app1']
    assert got['servers']['jdg-app1']['requests'] == len(HOSTILE_TAILS)
    assert got['servers']['jdg-app1']['errors_5xx'] == 0
    assert set(got['servers']['jdg-app1']['response_ms']) == {1}
    assert got['matched'] == len(HOSTILE_TAILS)


@pytest.mark.parametrize('header', [
    'Nov 28 20:18:27 jdg-lb1 haproxy[452]: ', 'Nov  8 20:18:27 jdg-lb1 haproxy[452]: ',  # rsyslog's traditional
    '<134>Nov 28 20:18:27 jdg-lb1 haproxy[452]: ', 'Nov 28 20:18:27 haproxy[452]: ',  # with PRI, without a host
    '2026-11-28T20:18:27Z lb1.example.com haproxy[452]: ', '2026-11-28T20:18:27+0000 lb1 haproxy[452]: ',  # journalctl
    'Nov 28 20:18:27.251633 lb1 haproxy[452]: ',  # journalctl -o short-precise
])
def test_the_usual_syslog_headers_still_parse(header):
    entry = hl.parse_line(header + FIXED + ' - - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"', utc_offset=0)
    assert entry['server'] == 'jdg-app1' and entry['status'] == 200


def test_placeholders_for_no_server_parse_and_count_for_nobody():
    lines = [HEADER + FIXED.replace('jdg-app1', placeholder) + ' - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"'
             for placeholder in ('<NOSRV>', '<STATS>', '<lua.hello>')]
    assert [hl.parse_line(line, utc_offset=0)['server'] for line in lines] == ['<NOSRV>', '<STATS>', '<lua.hello>']
    assert hl.collect(lines, 'demoapp', since=T0, utc_offset=0)['servers'] == {}


@pytest.mark.parametrize('kwargs, word', [
    (dict(seconds=float('nan')), 'window=nan'), (dict(seconds=float('inf')), 'window=inf'),
    (dict(seconds=0), 'window=0'), (dict(since=float('nan')), 'since=nan'), (dict(since=float('-inf')), 'since=-inf'),
    (dict(since=T0, until=float('nan')), 'until=nan'), (dict(until=float('inf')), 'until=inf'),
])
def test_a_window_that_is_no_window_is_refused_naming_the_value(kwargs, word):
    with pytest.raises(hl.LogError, match=word):
        hl.window(T0, **kwargs)


def test_the_window_defaults_and_since_overrides_it():
    assert hl.window(T0, 30) == (T0 - 30, T0)
    assert hl.window(T0, float('nan'), since=T0 - 5, until=T0 + 5) == (T0 - 5, T0 + 5)


def test_the_module_refuses_a_nan_window_instead_of_counting_everything(tmp_path):
    path = tmp_path / 'haproxy.log'
    path.write_text(HEADER + FIXED + ' - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"\n')
    ok, result, raw = run_adhoc('grayrelease.canary.haproxy_log', {'path': str(path), 'backend': 'demoapp',
                                                                   'window': 'nan'})
    # Ansible's float type makes nan of 'nan'; a NaN since let every request in.
    assert not ok and result['msg'] == 'window=nan must be a finite number of seconds', raw
