# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Credentials go only to the origin they were given for: two real HTTP servers on
loopback (two ports, two origins), one redirecting to the other, for every HTTP
client of the collection (artifact download, Prometheus, health probes, samples),
and the artifact download's deadline against a server that trickles."""
from __future__ import annotations

import base64
import hashlib
import os
import sys
import time
import urllib.request

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _http
from ansible_collections.grayrelease.canary.plugins.module_utils._health import build_targets, check_urls, run_checks
from ansible_collections.grayrelease.canary.plugins.module_utils._prometheus import fetch, run_queries
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import ReleaseError, download
from ansible_collections.grayrelease.canary.plugins.module_utils._sample import sample

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import make_ca_and_server_cert  # noqa: E402
from _trickle_helpers import TrickleServer  # noqa: E402
from _two_origins import Origin  # noqa: E402

ARTIFACT = b'release bytes\n' * 1000
BASIC = 'Basic ' + base64.b64encode(b'deploy:p@ss@word').decode()
# Headers a user may give: every one of them is a credential for its origin.
USER_HEADERS = {'Authorization': 'Bearer tok3n', 'Cookie': 'session=c00kie', 'X-Scope-OrgID': 'tenant-secret'}
SECRETS = ('authorization', 'cookie', 'x-scope-orgid')


@pytest.fixture
def origins():
    """(a, b): a serves nothing itself; b serves the artifact."""
    a, b = Origin(), Origin()
    b.files['/app.tar.gz'] = ARTIFACT
    a.files['/app.tar.gz'] = ARTIFACT
    a.forward('/elsewhere', b.url)
    a.forward('/same', a.url)
    yield a, b
    a.close()
    b.close()


def _no_credentials(headers):
    return not any(name in headers for name in SECRETS)


# ------------------------------------------------------------------ the policy

def test_origin_is_scheme_host_and_port():
    assert _http.origin('http://H.example/x') == _http.origin('http://h.example:80/y') == ('http', 'h.example', 80)
    assert _http.origin('https://h.example/') != _http.origin('http://h.example:443/')
    assert _http.origin('http://h:8080/') != _http.origin('http://h:8081/')
    assert _http.origin('http://h:port/') is None


def test_split_credentials_takes_the_userinfo_up_to_the_last_at():
    url, headers = _http.split_credentials('http://deploy:p%40ss@word@repo:8080/a.tar.gz?x=1')
    assert url == 'http://repo:8080/a.tar.gz?x=1'
    assert headers == {'Authorization': 'Basic ' + base64.b64encode(b'deploy:p@ss@word').decode()}
    assert _http.split_credentials('https://repo/a') == ('https://repo/a', {})


def _redirected(old_url, new_url, code=302):
    request = urllib.request.Request(old_url, headers=dict(USER_HEADERS, **{'User-Agent': 'ua', 'Accept': '*/*'}))
    return _http.OriginRedirectHandler().redirect_request(request, None, code, 'Found', {}, new_url)


@pytest.mark.parametrize('new_url', ['http://h:8443/b',         # https -> http, same host and port
                                     'https://other:8443/b',    # another host
                                     'https://h:9443/b'])       # another port
def test_a_hop_to_another_origin_keeps_no_credential(new_url):
    new = _redirected('https://h:8443/a', new_url)
    assert sorted(name.lower() for name in new.headers) == ['accept', 'user-agent']


def test_a_hop_within_the_origin_keeps_every_header():
    new = _redirected('https://h:8443/a', 'https://H:8443/b', code=307)
    assert sorted(name.lower() for name in new.headers) == ['accept', 'authorization', 'cookie', 'user-agent',
                                                            'x-scope-orgid']


def test_a_hop_to_another_scheme_than_http_fails_naming_it():
    with pytest.raises(urllib.error.HTTPError, match='not http.*ftp://h/a'):
        _redirected('http://h/a', 'ftp://h/a')


def test_open_url_refuses_what_is_not_http():
    with pytest.raises(ValueError, match='file:///etc/passwd is not an http'):
        _http.open_url('file:///etc/passwd')


# ------------------------------------------------------------------ artifact download

def test_download_redirected_to_another_origin_arrives_without_credentials(origins, tmp_path):
    a, b = origins
    digest = download(a.with_credentials('deploy:p@ss@word@') + '/elsewhere/app.tar.gz', str(tmp_path / 'x'))
    assert digest == hashlib.sha256(ARTIFACT).hexdigest()
    assert a.headers_of('/elsewhere/app.tar.gz')[0]['authorization'] == BASIC
    [headers] = b.headers_of('/app.tar.gz')
    assert 'authorization' not in headers and headers['user-agent'] == 'grayrelease.canary'


def test_download_redirected_within_its_origin_keeps_credentials(origins, tmp_path):
    a, dummy = origins
    download(a.with_credentials('deploy:p@ss@word@') + '/same/app.tar.gz', str(tmp_path / 'x'))
    assert [h['authorization'] for h in a.headers_of('/app.tar.gz')] == [BASIC]


def test_download_sent_away_and_back_does_not_regain_credentials(origins, tmp_path):
    a, b = origins
    b.forward('/back', a.url)
    download(a.with_credentials('deploy:p@ss@word@') + '/elsewhere/back/app.tar.gz', str(tmp_path / 'x'))
    assert [p for p, dummy in a.requests] == ['/elsewhere/back/app.tar.gz', '/app.tar.gz']
    assert 'authorization' not in a.headers_of('/app.tar.gz')[0]


def test_download_https_downgraded_to_http_arrives_without_credentials(origins, tmp_path):
    made = make_ca_and_server_cert(tmp_path)
    if made is None:
        pytest.skip('needs the openssl command')
    dummy, context = made
    a, b = origins
    secure = Origin(tls_context=context)
    try:
        secure.forward('/plain', b.url)
        download(secure.with_credentials('deploy:p@ss@word@') + '/plain/app.tar.gz', str(tmp_path / 'x'),
                 validate_certs=False)
        assert secure.headers_of('/plain/app.tar.gz')[0]['authorization'] == BASIC
        assert 'authorization' not in b.headers_of('/app.tar.gz')[0]
    finally:
        secure.close()


# ------------------------------------------------------------------ Prometheus

def test_prometheus_redirected_to_another_origin_arrives_without_the_headers(origins):
    a, b = origins
    got = run_queries(a.url + '/elsewhere', [{'name': 'n', 'query': 'up', 'type': 'instant'}], end=100.0, window=10,
                      headers=USER_HEADERS)
    assert got['n']['values'] == [7.0]
    [(path, first)] = a.requests
    assert first['authorization'] == 'Bearer tok3n' and first['cookie'] == 'session=c00kie'
    [(path, headers)] = b.requests
    assert path.startswith('/api/v1/query?') and _no_credentials(headers)


def test_prometheus_url_credentials_go_as_basic_auth_only_to_their_origin(origins):
    a, b = origins
    base = a.with_credentials('deploy:p@ss@word@')
    assert '"success"' in fetch(base + '/same/api/v1/query?query=up')
    assert '"success"' in fetch(base + '/elsewhere/api/v1/query?query=up')
    assert [h['authorization'] for dummy, h in a.requests] == [BASIC, BASIC, BASIC]
    assert 'authorization' not in b.requests[0][1]


# ------------------------------------------------------------------ health probes and samples

def _targets(url):
    defaults = dict(status_codes=[200], body_regex=None, json_query=None, json_expect=None, max_latency_ms=None,
                    rise=1, timeout=2.0, headers=USER_HEADERS, validate_certs=True, ca_path=None)
    return build_targets([url], defaults)


def test_health_probes_follow_no_redirect_so_no_header_leaves_the_origin(origins):
    a, b = origins
    result = run_checks(_targets(a.url + '/elsewhere/healthz'), interval=0, deadline=0.2)
    assert result['results'][a.url + '/elsewhere/healthz']['last_status'] == 302
    assert a.requests[0][1]['authorization'] == 'Bearer tok3n'
    assert b.requests == []
    # Nor within the origin: a 3xx is the probe's answer, as documented.
    result = check_urls([a.url + '/same/healthz'], rise=1, deadline=0.2)
    assert result['results'][a.url + '/same/healthz']['last_status'] == 302
    assert a.headers_of('/healthz') == []


def test_samples_follow_no_redirect_so_no_header_leaves_the_origin(origins):
    a, b = origins
    got = sample(_targets(a.url + '/elsewhere/'), count=2, duration=0)
    assert got[a.url + '/elsewhere/']['statuses'] == {'302': 2}
    assert [h['cookie'] for dummy, h in a.requests] == ['session=c00kie'] * 2
    assert b.requests == []


# ------------------------------------------------------------------ the download's deadline

class FakeClock(object):
    """Each reading one second later than the last."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_download_from_a_trickling_server_fails_at_its_deadline_naming_url_and_deadline(tmp_path):
    server = TrickleServer('body', tick=0.02)
    try:
        url = server.base_url.replace('://', '://deploy:s3cret@') + '/app.tar.gz?token=abc'
        started = time.monotonic()
        with pytest.raises(ReleaseError) as err:
            download(url, str(tmp_path / 'x'), deadline=20, clock=FakeClock())
        # 20 readings of the fake clock: a byte each, well under a second.
        assert time.monotonic() - started < 5
    finally:
        server.stop()
    assert err.value.msg == ('cannot download %s/app.tar.gz?token=***: not complete within its deadline of 20 s '
                             'for the whole download (the server sends too slowly, or stalls)'
                             % server.base_url.replace('://', '://***@'))
    assert not (tmp_path / 'x').exists()


def test_download_deadline_cuts_off_headers_that_never_end(tmp_path):
    server = TrickleServer('headers', tick=0.1)
    try:
        started = time.monotonic()
        with pytest.raises(ReleaseError, match='deadline of 1 s'):
            download(server.base_url + '/app.tar.gz', str(tmp_path / 'x'), deadline=1)
        # Each byte comes well within the per-read timeout (60 s): only the deadline ends it.
        assert time.monotonic() - started < 4
    finally:
        server.stop()
    assert not (tmp_path / 'x').exists()
