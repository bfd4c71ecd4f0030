# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Credentials in URLs are never printed: _redact itself, then every result key
and message of health_check, http_sample and prometheus_query (their logic in
module_utils; no network: probes are faked, Prometheus is a closed port)."""
from __future__ import annotations

import io
import json
import os
import sys
import urllib.error

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _redact
from ansible_collections.grayrelease.canary.plugins.module_utils._health import (
    HealthError, build_targets, check_urls, run_checks)
from ansible_collections.grayrelease.canary.plugins.module_utils._prometheus import (
    PrometheusError, api_url, fetch, run_queries)
from ansible_collections.grayrelease.canary.plugins.module_utils._sample import sample

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import closed_port  # noqa: E402

# What must never show: a password with @ in it, and query-string tokens.
URL = 'http://deploy:p@ss@word@127.0.0.1:8080/healthz?verbose=1&token=t0ken&api_key=k3y'
SHOWN = 'http://***@127.0.0.1:8080/healthz?verbose=1&token=***&api_key=***'
SECRETS = ('p@ss', 'word@', 't0ken', 'k3y', 'deploy')


def _assert_clean(value):
    text = json.dumps(value)
    assert not [s for s in SECRETS if s in text], text


@pytest.mark.parametrize('text, shown', [
    ('http://u:p@ss@host/', 'http://***@host/'),
    ('http://u:p@host', 'http://***@host'),
    ('cannot download https://u:a@b@c@repo:8443/a.tar.gz: HTTP 404', 'cannot download https://***@repo:8443/a.tar.gz: HTTP 404'),
    ('https://t0ken@repo/x', 'https://***@repo/x'),
    # The userinfo stops at the authority: an @ in the path is not one.
    ('https://registry/@scope/pkg.tgz', 'https://registry/@scope/pkg.tgz'),
    ('http://a/ and mail ops@example.com', 'http://a/ and mail ops@example.com'),
])
def test_userinfo_is_redacted_up_to_the_last_at_before_the_host(text, shown):
    assert _redact.redact_url(text) == shown


@pytest.mark.parametrize('name', ['token', 'access_token', 'accessToken', 'private_token', 'api_key', 'apiKey',
                                  'apikey', 'key', 'password', 'passwd', 'pwd', 'secret', 'client_secret', 'sig',
                                  'signature', 'X-Amz-Signature', 'X-Amz-Credential', 'X-Amz-Security-Token', 'auth',
                                  'session', 'jwt'])
def test_values_of_secret_looking_query_parameters_are_redacted(name):
    assert _redact.redact_url('http://h/p?a=1&%s=s3cr3t&b=2' % name) == 'http://h/p?a=1&%s=***&b=2' % name
    assert _redact.redact_url('http://h/p?%s=s3cr3t' % name) == 'http://h/p?%s=***' % name
    # OAuth's implicit flow puts the token in the fragment.
    assert _redact.redact_url('http://h/cb#%s=s3cr3t' % name) == 'http://h/cb#%s=***' % name


@pytest.mark.parametrize('name', ['verbose', 'status', 'passive', 'author', 'design', 'monkey', 'q', 'keys', 'query'])
def test_other_query_parameters_are_kept(name):
    assert _redact.redact_url('http://h/p?%s=value' % name) == 'http://h/p?%s=value' % name


def test_a_url_quoted_in_a_message_keeps_its_quote():
    assert _redact.redact_url("target 'http://h/?token=abc': invalid port") == "target 'http://h/?token=***': invalid port"


def test_redacting_twice_changes_nothing_and_dict_keys_are_redacted():
    once = _redact.redact({URL: [URL, {'x': URL}], 'n': 1})
    assert once == {SHOWN: [SHOWN, {'x': SHOWN}], 'n': 1}
    assert _redact.redact(once) == once


def test_url_secrets_are_the_credentials_with_their_delimiters():
    assert _redact.url_secrets([URL, {'url': 'https://a:b@h/', 'rise': 2}]) == {
        'deploy:p@ss@word@', 'token=t0ken', 'api_key=k3y', 'a:b@'}
    assert _redact.url_secrets(SHOWN) == set()
    assert _redact.url_secrets('http://h/?token=') == set()


# ------------------------------------------------------------------ health_check

def _defaults(**kwargs):
    defaults = dict(status_codes=[200], body_regex=None, json_query=None, json_expect=None, max_latency_ms=None,
                    rise=1, timeout=1.0, headers=None, validate_certs=True, ca_path=None)
    defaults.update(kwargs)
    return defaults


def _refused(target, timeout):
    return None, 'connection refused', None


def test_health_results_and_message_show_urls_redacted():
    good = 'http://u:pw@ok@127.0.0.1:1/ok?sig=abc'
    result = run_checks(build_targets([URL, good], _defaults()), interval=0, deadline=1,
                        probe_func=lambda t, timeout: (200, None, 1.0) if t.url == good else _refused(t, timeout))
    assert result['unhealthy'] == [SHOWN] and result['healthy'] == ['http://***@127.0.0.1:1/ok?sig=***']
    assert set(result['results']) == {SHOWN, 'http://***@127.0.0.1:1/ok?sig=***'}
    assert '%s (connection refused)' % SHOWN in result['msg']
    _assert_clean(result)


def test_health_check_urls_reports_redacted():
    result = check_urls([URL], rise=1, deadline=1, probe_func=_refused)
    assert result['unhealthy'] == [SHOWN]
    _assert_clean(result)


@pytest.mark.parametrize('target, defaults', [
    ({'url': URL, 'nope': 1}, {}),                    # unknown key
    ({'url': URL.replace('8080', 'port')}, {}),       # invalid port
    (URL, {'rise': 0}),                               # bad setting, named with its target
    (URL, {'body_regex': '('}),
])
def test_health_errors_name_the_target_redacted(target, defaults):
    with pytest.raises(HealthError) as err:
        build_targets([target], _defaults(**defaults))
    assert '***@127.0.0.1' in str(err.value)
    _assert_clean(str(err.value))


def test_health_duplicate_target_error_is_redacted():
    with pytest.raises(HealthError, match=r'duplicate target .http://\*\*\*@127'):
        build_targets([URL, URL], _defaults())


# ------------------------------------------------------------------ http_sample

def test_samples_are_keyed_by_redacted_urls():
    got = sample(build_targets([URL], _defaults()), count=2, duration=0, probe_func=_refused)
    assert list(got) == [SHOWN] and got[SHOWN]['errors'] == 2
    _assert_clean(got)


# ------------------------------------------------------------------ prometheus_query

def test_prometheus_unreachable_error_is_redacted():
    base = 'http://deploy:p@ss@word@127.0.0.1:%d' % closed_port()
    got = run_queries(base, [{'name': 'x', 'query': 'up'}], end=100, window=10, timeout=2)
    assert got['x']['error'].startswith('cannot reach http://***@127.0.0.1:')
    _assert_clean(got)


def test_prometheus_bad_url_error_is_redacted():
    with pytest.raises(PrometheusError) as err:
        api_url('ftp://deploy:p@ss@word@prom:9090?token=t0ken', 'up')
    _assert_clean(str(err.value))


def test_prometheus_http_error_names_the_url_redacted():
    def answer_500(url, headers=None, timeout=None):
        raise urllib.error.HTTPError(url, 500, 'Internal Server Error', {}, io.BytesIO(b'oops'))
    with pytest.raises(PrometheusError) as err:
        fetch(URL, opener=answer_500)
    assert str(err.value) == 'HTTP 500 from http://***@127.0.0.1:8080/healthz'
