# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules whose options carry URLs, run by real Ansible (ansible localhost -m,
at -vvv so the module's arguments are printed too): no credential of a URL
shows anywhere in the output, results, messages and invocation included."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import closed_port, run_adhoc  # noqa: E402

# Each test starts a real `ansible` process (a few seconds each).
pytestmark = pytest.mark.slow

SECRETS = ('p@ss@word', 't0ken', 'k3y')


def _url(path):
    return 'http://deploy:p@ss@word@127.0.0.1:%d%s?token=t0ken&api_key=k3y' % (closed_port(), path)


def _shown(url):
    return url.replace('deploy:p@ss@word@', '***@').replace('t0ken', '***').replace('k3y', '***')


def _assert_clean(raw):
    assert not [s for s in SECRETS if s in raw], raw


def test_health_check_shows_no_url_credential():
    url = _url('/healthz')
    ok, result, raw = run_adhoc('grayrelease.canary.health_check', {'targets': [url], 'deadline': 0.5}, extra=['-vvv'])
    assert not ok, raw
    assert result['unhealthy'] == [_shown(url)] and list(result['results']) == [_shown(url)]
    assert '%s (connection refused)' % _shown(url) in result['msg']
    _assert_clean(raw)


def test_http_sample_shows_no_url_credential():
    url = _url('/')
    ok, result, raw = run_adhoc('grayrelease.canary.http_sample', {'targets': [url], 'count': 1, 'duration': 0},
                                extra=['-vvv'])
    assert ok, raw
    assert result['samples'][_shown(url)]['errors'] == 1
    _assert_clean(raw)


def test_prometheus_query_shows_no_url_credential():
    url = _url('')
    ok, result, raw = run_adhoc('grayrelease.canary.prometheus_query',
                                {'url': url.split('?')[0], 'queries': [{'name': 'a', 'query': 'up'}], 'window': 10,
                                 'timeout': 2, 'fail_on_error': True}, extra=['-vvv'])
    assert not ok and result['msg'].startswith('a: cannot reach http://***@127.0.0.1:'), raw
    _assert_clean(raw)


def test_release_download_on_the_host_shows_no_url_credential(tmp_path):
    url = _url('/demoapp-v2.tar.gz')
    ok, result, raw = run_adhoc('grayrelease.canary.release',
                                {'root': str(tmp_path), 'version': 'v2', 'state': 'staged', 'src': url,
                                 'remote_src': True, 'checksum': 'sha256:' + '0' * 64}, extra=['-vvv'])
    assert not ok and result['msg'].startswith('cannot download %s' % _shown(url)), raw
    _assert_clean(raw)
