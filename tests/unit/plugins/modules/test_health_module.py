# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.health_check run by real Ansible against loopback HTTP servers."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import closed_port, python_without, run_adhoc, start_http_server, stop_http_server  # noqa: E402

MODULE = 'grayrelease.canary.health_check'
# Each test starts real `ansible` processes (a few seconds each).
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def server():
    srv = start_http_server()
    yield srv
    stop_http_server(srv)


def test_healthy_and_unhealthy_targets_fail_the_task_naming_each(server):
    good = server.base_url + '/json?status=up'
    down = server.base_url + '/json?status=down'
    refused = 'http://127.0.0.1:%d/healthz' % closed_port()
    ok, result, raw = run_adhoc(MODULE, {'targets': [good, down, refused], 'json_query': 'status',
                                         'json_expect': 'up', 'interval': 0.1, 'deadline': 1})
    assert not ok, raw
    assert result['healthy'] == [good] and result['unhealthy'] == [down, refused]
    # The documented `results` key survives ansible-core's renaming of non-list results.
    assert set(result['results']) == {good, down, refused}
    assert 'ansible_module_results' not in result and 'target_results' not in result
    assert result['results'][good]['latency_ms']['p50'] is not None
    msg = result['msg']
    assert "%s (json_query 'status' gave 'down', expected 'up')" % down in msg
    assert '%s (connection refused)' % refused in msg
    assert result['changed'] is False


def test_fail_on_unhealthy_false_and_check_mode(server):
    good = server.base_url + '/ok'
    bad = server.base_url + '/status/502'
    args = {'targets': [good, {'url': bad, 'rise': 1}], 'fail_on_unhealthy': False, 'interval': 0.1, 'deadline': 0.5}
    ok, result, raw = run_adhoc(MODULE, args, extra=['--check'])
    assert ok, raw
    assert result['unhealthy'] == [bad]
    assert result['results'][bad]['last_status'] == 502
    assert result['results'][good]['ok'] is True


def test_headers_are_not_logged(server):
    url = server.base_url + '/headers'
    ok, result, raw = run_adhoc(MODULE, {'targets': [url], 'headers': {'X-Token': 'sesame'}, 'interval': 0.1},
                                extra=['-vvv'])
    assert ok, raw
    assert result['healthy'] == [url]
    assert result['invocation']['module_args']['headers'] == {'X-Token': 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'}
    assert 'sesame' not in raw


def test_missing_jmespath_is_a_clear_failure_and_stdlib_is_enough(server):
    python = python_without('jmespath')
    if python is None:
        pytest.skip('no python3 without jmespath on this machine')
    url = server.base_url + '/json'
    interp = ['-e', 'ansible_python_interpreter=%s' % python]
    ok, result, raw = run_adhoc(MODULE, {'targets': [url], 'json_query': 'status', 'json_expect': 'up'}, extra=interp)
    assert not ok
    assert 'Failed to import the required Python library (jmespath)' in result['msg']
    assert 'Traceback' not in result['msg']
    # The same interpreter runs every check that does not need jmespath.
    ok, result, raw = run_adhoc(MODULE, {'targets': [url], 'body_regex': '"status": "up"', 'interval': 0.1},
                                extra=interp)
    assert ok, raw
    assert result['healthy'] == [url]


def test_bad_option_fails_naming_the_value():
    ok, result, raw = run_adhoc(MODULE, {'targets': ['gopher://x/']})
    assert not ok and "'gopher://x/'" in result['msg']
