# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.canary_judge run by real Ansible: argument_spec, wrapper, check mode."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import run_adhoc  # noqa: E402

# Each test starts real `ansible` processes (a few seconds each).
pytestmark = pytest.mark.slow

BASE = [10 + (i % 7) for i in range(40)]
HIGH = [20 + (i % 7) for i in range(40)]
ARGS = {
    'metrics': [
        {'name': 'latency', 'kind': 'samples', 'baseline': BASE, 'canary': HIGH},
        {'name': 'errors', 'kind': 'ratio', 'critical': True, 'weight': 2,
         'baseline': {'errors': 1, 'total': 1000}, 'canary': {'errors': 2, 'total': 1000}},
    ],
}


def test_module_judges_and_never_changes():
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', ARGS)
    assert ok, raw
    assert result['changed'] is False
    assert result['metrics']['latency']['classification'] == 'high'
    assert result['metrics']['errors']['classification'] == 'pass'
    assert result['metrics']['errors']['weight'] == 2
    # passing weight 2 of 3
    assert abs(result['score'] - 200.0 / 3) < 1e-9
    assert result['verdict'] == 'fail'


def test_module_check_mode_gives_the_same_result():
    ok, normal, raw = run_adhoc('grayrelease.canary.canary_judge', ARGS)
    ok_check, checked, raw_check = run_adhoc('grayrelease.canary.canary_judge', ARGS, extra=['--check'])
    assert ok and ok_check, raw + raw_check
    assert checked['verdict'] == normal['verdict'] and checked['metrics'] == normal['metrics']
    assert checked['changed'] is False


def test_module_bad_input_fails_naming_the_value():
    bad = {'metrics': [{'name': 'e', 'kind': 'ratio', 'baseline': {'errors': 7, 'total': 3},
                        'canary': {'errors': 0, 'total': 3}}]}
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', bad)
    assert not ok
    assert "metric 'e'" in result['msg'] and 'errors 7' in result['msg']

    bad_kind = {'metrics': [{'name': 'e', 'kind': 'histogram', 'baseline': [], 'canary': []}]}
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', bad_kind)
    assert not ok and 'histogram' in result['msg']


def test_module_critical_thresholds_and_explanations():
    slow = [b * 3 for b in BASE]
    args = {'metrics': [
        {'name': 'latency', 'kind': 'samples', 'baseline': BASE, 'canary': slow},
        {'name': 'other', 'kind': 'samples', 'baseline': BASE, 'canary': list(BASE), 'weight': 10},
    ]}
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', args)
    assert ok, raw
    lat = result['metrics']['latency']
    assert result['verdict'] == 'fail' and result['decided_by'] == 'critical_threshold'
    assert result['critical_breached'] == ['latency'] and result['score'] == pytest.approx(100 * 10 / 11.0)
    assert lat['rule'] == 'critical: median 3x >= 2x and p<0.001 < 0.02' and lat['effect'] == 3
    assert lat['thresholds']['critical_ratio'] == 2 and lat['p_text'] == '<0.001'
    # The global option, and the per-metric one on the wrong kind.
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', dict(args, critical_ratio=4))
    assert ok and result['verdict'] == 'marginal' and result['decided_by'] == 'score', raw
    wrong = {'metrics': [dict(args['metrics'][0], critical_difference=0.1)]}
    ok, result, raw = run_adhoc('grayrelease.canary.canary_judge', wrong)
    assert not ok and "metric 'latency': critical_difference applies to the ratio kind only" in result['msg']
