"""haproxy_log and prometheus_query run as Ansible runs them (ansible localhost -m),
against a log file in tmp and a fake Prometheus on loopback."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import closed_port, run_adhoc  # noqa: E402
from _prometheus_fake import fake_prometheus_url  # noqa: E402


def log_line(epoch, server, tr, status=200):
    stamp = time.strftime('%d/%b/%Y:%H:%M:%S', time.localtime(epoch))
    return ('Nov 28 20:18:27 lb1 haproxy[1]: 127.0.0.1:40590 [%s.000] fe_demoapp demoapp/%s 0/0/0/%d/%d %d 204 '
            '- - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"' % (stamp, server, tr, tr + 1, status))


def test_haproxy_log_module_reads_the_window_in_check_mode_too(tmp_path):
    now = time.time()
    path = tmp_path / 'haproxy.log'
    old = [log_line(now - 600, 'app1', 1)]
    recent = [log_line(now - 5, 'app1', 300), log_line(now - 4, 'app2', 2, 500), log_line(now - 3, 'other', 9)]
    path.write_text('\n'.join(old + recent) + '\n')
    ok, result, raw = run_adhoc('grayrelease.canary.haproxy_log', {'path': str(path), 'backend': 'demoapp',
                                                                   'servers': ['app1', 'app2'], 'window': 60},
                                extra=['--check'])
    assert ok, raw
    assert result['changed'] is False and result['found'] is True and result['matched'] == 2
    assert result['servers']['app1']['response_ms'] == [300] and result['servers']['app1']['total_ms'] == [301]
    assert result['servers']['app2']['errors_5xx'] == 1


def test_haproxy_log_module_missing_file_fails_naming_it_unless_missing_ok(tmp_path):
    path = str(tmp_path / 'nope.log')
    ok, result, raw = run_adhoc('grayrelease.canary.haproxy_log', {'path': path, 'backend': 'demoapp'})
    assert not ok and 'no HAProxy request log at %s' % path in result['msg'], raw
    ok, result, raw = run_adhoc('grayrelease.canary.haproxy_log', {'path': path, 'backend': 'demoapp',
                                                                   'missing_ok': True})
    assert ok and result['found'] is False and result['servers'] == {}, raw


def test_prometheus_query_module_against_a_fake_prometheus():
    queries = [{'name': 'series', 'query': 'up', 'step': 5}, {'name': 'count', 'query': 'x', 'type': 'instant'},
               {'name': 'broken', 'query': 'bad'}]
    with fake_prometheus_url() as url:
        ok, result, raw = run_adhoc('grayrelease.canary.prometheus_query',
                                    {'url': url, 'queries': queries, 'window': 30, 'end': 1000})
        assert ok, raw
        assert result['answers']['series']['values'] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert result['answers']['count']['values'] == [1000.0]
        assert 'bad_data' in result['answers']['broken']['error']
        assert (result['start'], result['end']) == (970.0, 1000.0)
        ok, result, raw = run_adhoc('grayrelease.canary.prometheus_query',
                                    {'url': url, 'queries': queries, 'window': 30, 'fail_on_error': True})
        assert not ok and result['msg'].startswith('broken: bad_data'), raw


def test_prometheus_query_module_bad_url_and_unreachable():
    ok, result, raw = run_adhoc('grayrelease.canary.prometheus_query',
                                {'url': 'prom:9090', 'queries': [{'name': 'a', 'query': 'up'}], 'window': 10})
    assert not ok and "Prometheus URL 'prom:9090'" in result['msg'], raw
    ok, result, raw = run_adhoc('grayrelease.canary.prometheus_query',
                                {'url': 'http://127.0.0.1:%d' % closed_port(), 'queries': [{'name': 'a', 'query': 'up'}],
                                 'window': 10, 'timeout': 2})
    assert ok and 'cannot reach' in result['answers']['a']['error'], raw
