# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""health_check and http_sample, run by real Ansible, end in time against servers that trickle bytes.

A per-read socket timeout never fires against such a server; only the overall
per-request deadline (the `timeout` option) ends a request, and `deadline` /
`duration` bound the whole task.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import run_adhoc, start_http_server, stop_http_server  # noqa: E402
from _trickle_helpers import TrickleServer  # noqa: E402

# Each test starts a real `ansible` process (a couple of seconds of its own).
pytestmark = pytest.mark.slow
# How long after its close a trickling server notices a client is gone: two of its ticks (0.3 s),
# plus room for a busy machine's scheduler. The tests time the module from the servers' side,
# not by the wall time of the whole `ansible` run: on a starved machine (the niced 2.16 lane of
# stop 27's CI) Ansible's start-up alone took over 20 s.
NOTICE = 1.5


@pytest.fixture
def trickling():
    servers = [TrickleServer('body', tick=0.3), TrickleServer('headers', tick=0.3)]
    yield servers
    for srv in servers:
        srv.stop()


@pytest.fixture
def server():
    srv = start_http_server()
    yield srv
    stop_http_server(srv)


def test_health_check_with_trickling_targets_fails_by_deadline_plus_timeout(trickling):
    body, headers = [srv.base_url + '/healthz' for srv in trickling]
    ok, result, raw = run_adhoc('grayrelease.canary.health_check',
                                {'targets': [body, headers], 'timeout': 1, 'deadline': 2, 'interval': 0.5})
    assert not ok, raw
    assert result['unhealthy'] == [body, headers]
    # deadline 2 + timeout 1, with room for a busy machine.
    assert result['elapsed'] < 4.0
    # Each request ended at its timeout of 1 s, though bytes kept arriving.
    for srv in trickling:
        held = srv.gone()
        assert held and max(held) < 1 + NOTICE, (srv.mode, held)
    assert '%s (timed out after 1 s (response still arriving))' % body in result['msg']
    assert '%s (timed out after 1 s (waiting for the response headers))' % headers in result['msg']


def test_http_sample_with_a_trickling_target_ends_by_duration_plus_timeout(trickling, server):
    slow = trickling[0].base_url + '/'
    good = server.base_url + '/ok'
    ok, result, raw = run_adhoc('grayrelease.canary.http_sample',
                                {'targets': [slow, good], 'count': 4, 'duration': 2, 'timeout': 1})
    assert ok, raw
    samples = result['samples']
    assert samples[slow]['total'] == 4 and samples[slow]['errors'] == 4
    assert samples[slow]['reasons'][0] == 'timed out after 1 s (response still arriving)'
    assert samples[good]['total'] == 4 and samples[good]['errors'] == 0
    # Every request to the trickling target ended at its timeout of 1 s.
    held = trickling[0].gone()
    assert len(held) == 4 and max(held) < 1 + NOTICE, held
