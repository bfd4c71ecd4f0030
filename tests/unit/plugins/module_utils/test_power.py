# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sample-size planner (plugins/module_utils/_power.py): power against the judge itself and scipy."""
from __future__ import annotations

import math
import random

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import judge
from ansible_collections.grayrelease.canary.plugins.module_utils._power import (
    PowerError,
    describe,
    error_power,
    fix,
    latency_power,
    plan,
)

scipy_stats = pytest.importorskip('scipy.stats')


def _judged_high(errors, n1, e2, n2):
    metric = {'name': 'e', 'kind': 'ratio', 'baseline': {'errors': e2, 'total': n2},
              'canary': {'errors': errors, 'total': n1}, 'critical_difference': 0}
    return judge([metric])['metrics']['e']['classification'] == 'high'


@pytest.mark.parametrize('n1, n2, base_rate, canary_rate', [
    (120, 1080, 0.0, 0.02),
    (60, 540, 0.0, 0.02),
    (300, 2700, 0.01, 0.03),
    (45, 400, 0.05, 0.2),
    (500, 500, 0.002, 0.01),
])
def test_error_power_is_the_judges_rule_under_the_binomial(n1, n2, base_rate, canary_rate):
    e2 = int(round(base_rate * n2))
    # Brute force: every canary error count the judge itself would call high, weighted by scipy's pmf.
    expected = sum(scipy_stats.binom.pmf(x, n1, canary_rate) for x in range(n1 + 1) if _judged_high(x, n1, e2, n2))
    assert error_power(n1, n2, base_rate, canary_rate) == pytest.approx(expected, abs=1e-9)


def test_error_power_without_data_or_effect():
    assert error_power(19, 1000, 0.0, 0.5) == 0.0            # below min_samples: nodata
    assert error_power(100, 900, 0.0, 0.0) == 0.0
    assert error_power(100000, 900000, 0.0, 0.02) == pytest.approx(1.0)


def test_latency_power_agrees_with_simulated_judgements():
    rng = random.Random(5)
    n1, n2, ratio, sd = 25, 120, 1.6, 0.5
    trials = 300
    hits = 0
    for dummy in range(trials):
        base = [math.exp(rng.gauss(0, sd)) for dummy in range(n2)]
        can = [ratio * math.exp(rng.gauss(0, sd)) for dummy in range(n1)]
        metric = {'name': 'l', 'kind': 'samples', 'baseline': base, 'canary': can, 'critical_ratio': 0}
        hits += judge([metric])['metrics']['l']['classification'] == 'high'
    predicted = latency_power(n1, n2, ratio, log_sd=sd)
    assert 0.3 < predicted < 0.95
    # A normal approximation: within 0.1 of what the judge does.
    assert abs(predicted - hits / float(trials)) < 0.1, (predicted, hits)
    assert latency_power(10, 1000, 5.0) == 0.0 and latency_power(100, 1000, 1.0) == 0.0


def test_plan_of_the_default_window():
    result = plan(40, 10, 10, 3)
    assert (result['canary_requests'], result['baseline_requests'], result['window_seconds']) == (120, 1080, 30)
    assert result['error_target_rate'] == 0.02
    assert result['error_power'] == pytest.approx(error_power(120, 1080, 0.0, 0.02), abs=1e-4)
    assert result['latency_power'] > 0.99
    assert result['ok'] is False
    # The suggested fixes are the first that are enough.
    count, percent = result['needed_count'], result['needed_traffic_percent']
    assert plan(40, 10, 10, count)['ok'] and not plan(40, 10, 10, count - 1)['ok']
    assert plan(40, percent, 10, 3)['ok'] and not plan(40, percent - 1, 10, 3)['ok']
    assert 0.02 < result['detectable_error_rate'] < 0.05
    assert error_power(120, 1080, 0.0, result['detectable_error_rate']) >= 0.8
    assert 1 < result['detectable_latency_ratio'] < 2


def test_plan_doubles_a_baseline_error_rate_and_passes_with_traffic():
    result = plan(1000, 10, 10, 3, baseline_error_rate=0.03)
    assert result['error_target_rate'] == pytest.approx(0.06) and result['ok']
    assert result['needed_count'] is None and result['needed_traffic_percent'] is None


def test_plan_without_traffic_cannot_be_fixed_by_the_window():
    result = plan(0, 10, 10, 3)
    assert result['canary_requests'] == 0 and result['error_power'] == 0 and not result['ok']
    assert result['needed_count'] is None and result['detectable_error_rate'] is None
    assert 'no window up to 1000 intervals' in fix(result, 10)


def test_texts_name_the_numbers_and_the_variables():
    result = plan(40, 10, 10, 3)
    line = describe(result)
    assert line.startswith('40 req/s x 10% x 30 s window: ~120 canary requests (vs 1080 baseline); power 0.69')
    assert 'catch 2% errors (baseline 0%)' in line and 'needs 0.80' in line
    expected = 'raise canary_analysis_count={0} (a {1} s window) or canary_traffic_percent={2}'.format(
        result['needed_count'], 10 * result['needed_count'], result['needed_traffic_percent'])
    assert result['needed_traffic_percent'] and fix(result, 10) == expected


@pytest.mark.parametrize('kwargs, needle', [
    (dict(request_rate=-1), 'request_rate -1'),
    (dict(request_rate='fast'), "request_rate 'fast'"),
    (dict(traffic_percent=0), 'traffic_percent 0 must be > 0'),
    (dict(traffic_percent=101), 'traffic_percent 101'),
    (dict(interval=0), 'interval 0'),
    (dict(count=0), 'count 0'),
    (dict(min_power=1.5), 'min_power 1.5'),
    (dict(latency_ratio=1), 'latency_ratio 1'),
])
def test_bad_input_is_named(kwargs, needle):
    args = dict(request_rate=40, traffic_percent=10, interval=10, count=3)
    args.update(kwargs)
    with pytest.raises(PowerError) as info:
        plan(**args)
    assert needle in str(info.value)
