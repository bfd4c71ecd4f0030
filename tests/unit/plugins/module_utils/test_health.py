# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""health_check logic (plugins/module_utils/_health.py) against real HTTP(S) servers on 127.0.0.1."""
from __future__ import annotations

import os
import sys
import time

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _health, _sample
from ansible_collections.grayrelease.canary.plugins.module_utils._health import (
    HealthError,
    MissingLibraryError,
    build_targets,
    latency_summary,
    run_checks,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import (  # noqa: E402
    closed_port,
    make_ca_and_server_cert,
    start_http_server,
    stop_http_server,
)
from _trickle_helpers import TrickleServer  # noqa: E402

DEFAULTS = dict(status_codes=[200], body_regex=None, json_query=None, json_expect=None, max_latency_ms=None,
                rise=2, timeout=5, headers=None, validate_certs=True, ca_path=None)


def check(targets, interval=0.05, deadline=5, concurrency=64, **overrides):
    defaults = dict(DEFAULTS, **overrides)
    return run_checks(build_targets(targets, defaults), interval=interval, deadline=deadline,
                      concurrency=concurrency)


@pytest.fixture
def server():
    srv = start_http_server()
    yield srv
    stop_http_server(srv)


@pytest.fixture(scope='module')
def tls_server(tmp_path_factory):
    made = make_ca_and_server_cert(tmp_path_factory.mktemp('tls'))
    if made is None:
        pytest.skip('the openssl CLI is not installed')
    ca_path, context = made
    srv = start_http_server(tls_context=context)
    srv.ca_path = ca_path
    yield srv
    stop_http_server(srv)


def test_healthy_target_after_rise_probes(server):
    url = server.base_url + '/ok'
    res = check([url], rise=3)
    r = res['results'][url]
    assert res['healthy'] == [url] and res['unhealthy'] == []
    assert r['ok'] is True and r['attempts'] == 3 and r['last_status'] == 200 and r['last_error'] is None
    assert server.hits['/ok'] == 3
    lat = r['latency_ms']
    assert 0 < lat['p50'] <= lat['p95'] <= lat['max']
    assert 'all 1 targets healthy' in res['msg']


def test_slow_target_times_out_and_deadline_bounds_the_call(server):
    url = server.base_url + '/ok?delay_ms=1500'
    start = time.monotonic()
    res = check([url], timeout=0.3, deadline=1.0, interval=0.1)
    elapsed = time.monotonic() - start
    r = res['results'][url]
    assert res['unhealthy'] == [url]
    assert 'timed out' in r['last_error'] and r['last_status'] is None
    assert elapsed < 2.0
    assert url in res['msg'] and 'timed out' in res['msg']


def test_latency_over_limit_is_unhealthy(server):
    slow = server.base_url + '/ok?delay_ms=150'
    fast = server.base_url + '/ok?fast=1'
    res = check([slow, fast], max_latency_ms=100, deadline=1)
    assert res['healthy'] == [fast] and res['unhealthy'] == [slow]
    reason = res['results'][slow]['last_error']
    assert 'latency' in reason and 'max_latency_ms 100' in reason
    assert res['results'][slow]['latency_ms']['p50'] >= 150
    assert res['results'][slow]['last_status'] == 200


def test_flapping_target_never_reaches_rise(server):
    url = server.base_url + '/flap'
    res = check([url], rise=2, interval=0.05, deadline=1)
    r = res['results'][url]
    assert r['ok'] is False and res['unhealthy'] == [url]
    assert r['attempts'] >= 4
    assert r['consecutive_ok'] <= 1
    assert r['reason'] in ('status 503 not in [200]',
                           'only 1 of 2 consecutive successful probes before the deadline (1 s)')


def test_recovering_target_becomes_healthy_and_failures_reset_the_count(server):
    url = server.base_url + '/recover?fails=3'
    res = check([url], rise=2)
    assert res['healthy'] == [url]
    assert res['results'][url]['attempts'] == 5


def test_wrong_body_and_status(server):
    body = server.base_url + '/ok'
    status = server.base_url + '/status/503'
    accepted = server.base_url + '/status/204'
    res = check([body, status, {'url': accepted, 'status_codes': [200, 204], 'body_regex': None}],
                body_regex=r'ready|ok', deadline=0.5)
    assert res['healthy'] == [body, accepted]
    assert res['results'][status]['last_error'] == 'status 503 not in [200]'
    res = check([body], body_regex=r'^ready$', deadline=0.3)
    assert "does not match body_regex '^ready$'" in res['results'][body]['last_error']


def test_json_query_value(server):
    down = server.base_url + '/json?status=down'
    up = server.base_url + '/json?status=up'
    res = check([down, up], json_query='status', json_expect='up', deadline=0.5)
    assert res['healthy'] == [up] and res['unhealthy'] == [down]
    assert res['results'][down]['last_error'] == "json_query 'status' gave 'down', expected 'up'"
    # Nested values, numbers, and the string spelling of a number.
    assert check([up], json_query='checks.version', json_expect=2)['healthy'] == [up]
    assert check([up], json_query='checks.version', json_expect='2')['healthy'] == [up]
    assert check([up], json_query='checks.db', json_expect='true')['healthy'] == [up]
    # true must not equal 1 just because Python says so.
    assert check([up], json_query='checks.db', json_expect=1, deadline=0.3)['unhealthy'] == [up]
    # Without json_expect the result must be non-empty.
    assert check([up], json_query='checks.db')['healthy'] == [up]
    res = check([up], json_query='checks.missing', deadline=0.3)
    assert 'expected a non-empty value' in res['results'][up]['last_error']


def test_body_that_is_not_json(server):
    url = server.base_url + '/notjson'
    res = check([url], json_query='status', json_expect='up', deadline=0.3)
    assert res['results'][url]['last_error'].startswith('body is not JSON')


def test_connection_refused():
    url = 'http://127.0.0.1:%d/healthz' % closed_port()
    res = check([url], deadline=0.5)
    r = res['results'][url]
    assert r['ok'] is False and r['last_error'] == 'connection refused' and r['last_status'] is None
    assert r['latency_ms'] == {'p50': None, 'p95': None, 'max': None}
    assert res['msg'].startswith('1 of 1 targets unhealthy') and '%s (connection refused)' % url in res['msg']


def test_tls_verified_with_ca_path(tls_server):
    url = tls_server.base_url + '/ok'
    assert url.startswith('https://')
    res = check([url], ca_path=tls_server.ca_path)
    assert res['healthy'] == [url]


def test_tls_fails_without_the_ca(tls_server):
    url = tls_server.base_url + '/ok'
    res = check([url], deadline=0.5)
    assert res['unhealthy'] == [url]
    assert 'TLS certificate verification failed' in res['results'][url]['last_error']


def test_tls_passes_with_validate_certs_false(tls_server):
    url = tls_server.base_url + '/ok'
    assert check([url], validate_certs=False)['healthy'] == [url]
    # per-target override
    assert check([{'url': url, 'validate_certs': False}])['healthy'] == [url]


def test_all_targets_probed_in_parallel(server):
    urls = [server.base_url + '/ok?delay_ms=300&n=%d' % i for i in range(20)]
    start = time.monotonic()
    res = check(urls, rise=1)
    elapsed = time.monotonic() - start
    assert res['healthy'] == urls
    assert server.max_inflight == 20
    # Serially this is 6 s; in parallel about one 0.3 s round.
    assert elapsed < 2.5


def test_concurrency_is_bounded(server):
    urls = [server.base_url + '/ok?delay_ms=100&n=%d' % i for i in range(12)]
    res = check(urls, rise=1, concurrency=3)
    assert res['healthy'] == urls
    assert server.max_inflight == 3


def test_only_unhealthy_targets_are_probed_again(server):
    good = server.base_url + '/ok'
    bad = server.base_url + '/status/500'
    res = check([good, bad], rise=1, interval=0.05, deadline=0.6)
    assert res['results'][good]['attempts'] == 1
    assert res['results'][bad]['attempts'] >= 3
    assert server.hits['/ok'] == 1


def test_per_target_overrides_and_header_merge(server):
    url = server.base_url + '/headers'
    other = server.base_url + '/headers?other=1'
    missing = server.base_url + '/missing'
    res = check([{'url': url, 'headers': {'X-Token': 'sesame'}}, other, {'url': missing, 'status_codes': [404], 'rise': 1}],
                headers={'X-Token': 'wrong', 'X-Team': 'sre'}, deadline=0.5)
    assert res['healthy'] == [url, missing] and res['unhealthy'] == [other]
    assert res['results'][missing]['attempts'] == 1
    assert res['results'][other]['last_error'] == 'status 401 not in [200]'
    sent = [h for h in server.seen_headers if h.get('X-Token') == 'sesame']
    assert sent and all(h.get('X-Team') == 'sre' for h in sent)
    assert all(h.get('User-Agent') == 'grayrelease.canary.health_check' for h in server.seen_headers)


@pytest.mark.parametrize('targets, overrides, needle', [
    (['ftp://host/x'], {}, "'ftp://host/x'"),
    (['http:///nohost'], {}, "'http:///nohost'"),
    (['http://h:99999/'], {}, 'invalid port'),
    (['http://a/', 'http://a/'], {}, "duplicate target 'http://a/'"),
    ([{'url': 'http://a/', 'colour': 1}], {}, "'colour'"),
    ([{'status_codes': [200]}], {}, 'None'),
    (['http://a/'], {'body_regex': '(['}, "'(['"),
    (['http://a/'], {'json_query': 'a[?'}, "'a[?'"),
    (['http://a/'], {'json_expect': 'up'}, "json_expect 'up'"),
    (['http://a/'], {'status_codes': [200, 700]}, '700'),
    (['http://a/'], {'rise': 0}, 'rise 0'),
    (['http://a/'], {'timeout': 0}, 'timeout 0'),
    (['https://a/'], {'ca_path': '/nonexistent/ca.pem'}, "'/nonexistent/ca.pem'"),
    (['http://a/'], {'headers': {'Bad Name': 'x'}}, "'Bad Name'"),
    ([], {}, 'targets'),
])
def test_bad_input_names_the_value(targets, overrides, needle):
    with pytest.raises(HealthError) as info:
        build_targets(targets, dict(DEFAULTS, **overrides))
    assert needle in str(info.value)


def test_header_values_are_not_echoed_in_errors():
    with pytest.raises(HealthError) as info:
        build_targets(['http://a/'], dict(DEFAULTS, headers={'Authorization': 'Bearer s3cret\nX: y'}))
    assert 's3cret' not in str(info.value) and "'Authorization'" in str(info.value)


def test_bad_loop_settings():
    targets = build_targets(['http://a/'], DEFAULTS)
    for kwargs, needle in ((dict(interval=-1), 'interval -1'), (dict(deadline=0), 'deadline 0'),
                           (dict(concurrency=0), 'concurrency 0')):
        with pytest.raises(HealthError, match=needle):
            run_checks(targets, **kwargs)


def test_missing_jmespath_only_matters_for_json_query(monkeypatch):
    monkeypatch.setattr(_health, '_jmespath', None)
    # None in sys.modules makes `import jmespath` raise ImportError.
    monkeypatch.setitem(sys.modules, 'jmespath', None)
    assert len(build_targets(['http://a/'], DEFAULTS)) == 1
    with pytest.raises(MissingLibraryError) as info:
        build_targets(['http://a/'], dict(DEFAULTS, json_query='status'))
    assert info.value.library == 'jmespath' and 'import jmespath' in info.value.traceback


def test_latency_summary_nearest_rank():
    assert latency_summary([]) == {'p50': None, 'p95': None, 'max': None}
    assert latency_summary([5.0]) == {'p50': 5.0, 'p95': 5.0, 'max': 5.0}
    values = [float(v) for v in range(1, 101)]
    assert latency_summary(list(reversed(values))) == {'p50': 50.0, 'p95': 95.0, 'max': 100.0}


# ------------------------------------------------ overall request deadline

@pytest.fixture
def trickle():
    """Factory of trickling servers, all stopped at the end of the test."""
    servers = []

    def make(mode, tls_context=None):
        srv = TrickleServer(mode, tick=0.3, tls_context=tls_context)
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.stop()


def _target(url, **overrides):
    return build_targets([url], dict(DEFAULTS, **overrides))[0]


@pytest.mark.parametrize('mode, phase', [('body', 'response still arriving'),
                                         ('headers', 'waiting for the response headers')])
def test_probe_of_a_trickling_server_ends_at_its_timeout(trickle, mode, phase):
    srv = trickle(mode)
    start = time.monotonic()
    status, reason, latency_ms = _health.probe(_target(srv.base_url + '/healthz'), 1.0)
    elapsed = time.monotonic() - start
    assert (status, latency_ms) == (None, None)
    assert reason == 'timed out after 1 s (%s)' % phase
    assert 0.9 < elapsed < 1.5


def test_probe_of_a_trickling_tls_server_ends_at_its_timeout(trickle, tmp_path):
    made = make_ca_and_server_cert(tmp_path)
    if made is None:
        pytest.skip('the openssl CLI is not installed')
    ca_path, context = made
    srv = trickle('headers', tls_context=context)
    start = time.monotonic()
    status, reason, dummy = _health.probe(_target(srv.base_url + '/healthz', ca_path=ca_path), 1.0)
    elapsed = time.monotonic() - start
    assert status is None and reason == 'timed out after 1 s (waiting for the response headers)'
    assert elapsed < 1.5


def test_health_check_against_trickling_servers_ends_by_deadline_plus_timeout(trickle, server):
    body = trickle('body').base_url + '/healthz'
    headers = trickle('headers').base_url + '/healthz'
    good = server.base_url + '/ok'
    start = time.monotonic()
    res = check([body, headers, good], timeout=1, deadline=2, interval=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 4.0
    assert res['unhealthy'] == [body, headers] and res['healthy'] == [good]
    for url in (body, headers):
        assert res['results'][url]['attempts'] >= 2
        assert res['results'][url]['last_error'].startswith('timed out after 1 s (')
        assert '%s (timed out after 1 s' % url in res['msg']


def test_no_probe_starts_after_the_deadline(trickle):
    # One worker, three trickling targets: the first probe holds it past the
    # deadline, so the other two are never sent and say so.
    base = trickle('body').base_url
    urls = [base + '/a', base + '/b', base + '/c']
    start = time.monotonic()
    res = check(urls, timeout=1, deadline=0.5, concurrency=1)
    elapsed = time.monotonic() - start
    assert elapsed < 1.5
    assert res['results'][urls[0]]['attempts'] == 1
    for url in urls[1:]:
        assert res['results'][url]['attempts'] == 0
        assert res['results'][url]['reason'] == 'not probed before the deadline (0.5 s)'


def test_sample_against_a_trickling_server_ends_within_duration_plus_timeout(trickle, server):
    slow = trickle('body').base_url + '/'
    good = server.base_url + '/ok'
    targets = build_targets([slow, good], dict(DEFAULTS, timeout=1, rise=1))
    start = time.monotonic()
    out = _sample.sample(targets, count=4, duration=2.0)
    elapsed = time.monotonic() - start
    assert elapsed < 3.5
    # Every round was sent on schedule, to the slow target too.
    assert out[slow]['total'] == 4 and out[slow]['errors'] == 4
    assert out[slow]['statuses'] == {'-': 4} and out[slow]['latencies_ms'] == []
    assert out[slow]['reasons'][0] == 'timed out after 1 s (response still arriving)'
    assert out[good]['total'] == 4 and out[good]['errors'] == 0 and len(out[good]['latencies_ms']) == 4
