# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sample-size planner for the canary analysis, pure computation.

Private to grayrelease.canary. From the request rate, the canary's traffic
share and the analysis window it says how many requests the canary will
see and how likely the judge (_judge.py, same rules and defaults) is to
catch two reference regressions with them:

* errors: a canary error rate twice the baseline's and at least
  ERROR_INCREASE above it (2 points when the baseline has no errors). The
  power is exact for the judge's rule: the binomial probability that the
  canary's error count is one the judge classifies `high` (significant and
  above the tolerated band), the baseline taken at its expected count;
* latency: a canary median LATENCY_RATIO times the baseline's. The power is
  the normal approximation of the Mann-Whitney test (Noether) for log-normal
  latencies of spread LATENCY_LOG_SD, times the chance that the sample
  medians differ by more than the tolerance.

Stdlib only, like the judge.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import two_proportion_p

ERROR_INCREASE = 0.02
LATENCY_RATIO = 2.0
# Spread (standard deviation of log latency) of the latencies the latency
# power assumes; the demo app's recorded requests have about 0.3, web
# services with a long tail 0.5 to 1.
LATENCY_LOG_SD = 0.5
# Search bounds: an analysis needing more intervals or a larger share than
# this is reported as out of reach rather than searched for ever.
MAX_COUNT = 1000
UNDERPOWERED_POLICIES = ('warn', 'fail')

_NORMAL = NormalDist()


class PowerError(ValueError):
    """Invalid planner input; the message names the offending value."""


def _check(name, value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PowerError('%s %r must be a number' % (name, value))
    if low is not None and (value < low or (low_open and value == low)):
        raise PowerError('%s %r must be %s %s' % (name, value, '>' if low_open else '>=', low))
    if high is not None and value > high:
        raise PowerError('%s %r must be <= %s' % (name, value, high))
    return value


def _binomial_tail(n, p, k):
    """P(X >= k) for X ~ Binomial(n, p), summed in log space around the mass."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    spread = 12 * math.sqrt(n * p * (1 - p)) + 12
    start = int(max(k, math.floor(n * p - spread)))
    stop = int(min(n, math.ceil(n * p + spread)))
    if start > stop:
        return 0.0
    total = 0.0
    for x in range(start, stop + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
                          + x * log_p + (n - x) * log_q)
    return min(1.0, total)


def first_true(low, high, predicate):
    """Smallest n in [low, high] with predicate(n), by bisection.

    predicate must be monotone (false, then true from some n on) and true at high.
    """
    while low < high:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle + 1
    return low


def error_power(canary_requests, baseline_requests, baseline_rate, canary_rate, alpha=0.02,
                tolerance=0.25, max_absolute=0.01, min_samples=20):
    """Probability that the judge classifies the canary's error rate `high`.

    Counts are rounded down to whole requests; the baseline's errors are
    its expected count. Below min_samples the metric has no data: power 0.
    """
    n1, n2 = int(canary_requests), int(baseline_requests)
    if n1 < min_samples or n2 < min_samples:
        return 0.0
    e2 = int(round(baseline_rate * n2))
    rate2 = e2 / float(n2)
    upper = rate2 * (1 + tolerance) + max_absolute

    def flagged(errors):
        return errors / float(n1) > upper and two_proportion_p(errors, n1, e2, n2) < alpha

    # The flagged counts are those from the smallest one above the band up:
    # the p-value only falls as the canary's count rises past the baseline's.
    low = int(math.floor(upper * n1)) + 1
    if low > n1 or not flagged(n1):
        return 0.0
    return _binomial_tail(n1, canary_rate, first_true(low, n1, flagged))


def latency_power(canary_requests, baseline_requests, ratio, alpha=0.02, tolerance=0.25, min_samples=20,
                  log_sd=LATENCY_LOG_SD):
    """Approximate probability that the judge classifies a latency `ratio` x slower canary `high`."""
    n1, n2 = int(canary_requests), int(baseline_requests)
    if n1 < min_samples or n2 < min_samples or ratio <= 1:
        return 0.0
    shift = math.log(ratio)
    # P(canary value > baseline value) for log-normal sides a log-shift apart.
    theta = _NORMAL.cdf(shift / (log_sd * math.sqrt(2.0)))
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2.0)
    significant = _NORMAL.cdf(math.sqrt(12.0 * n1 * n2 / (n1 + n2 + 1)) * (theta - 0.5) - z_alpha)
    # Sample medians: log-median variance pi/2 * sd^2 / n on each side.
    median_sd = log_sd * math.sqrt(math.pi / 2.0 * (1.0 / n1 + 1.0 / n2))
    beyond = _NORMAL.cdf((shift - math.log1p(tolerance)) / median_sd)
    return significant * beyond


def plan(request_rate, traffic_percent, interval, count, baseline_error_rate=0.0, alpha=0.02,
         error_tolerance=0.25, max_absolute=0.01, latency_tolerance=0.25, min_samples=20,
         min_power=0.8, error_increase=ERROR_INCREASE, latency_ratio=LATENCY_RATIO, log_sd=LATENCY_LOG_SD):
    """The canary analysis's sample plan.

    request_rate: requests per second the whole backend serves;
    traffic_percent: the canary's share (0-100); interval x count: the window.
    Returns expected requests, the power for the two reference regressions,
    the smallest error rate and latency ratio detectable with min_power,
    `ok`, and when not ok the analysis_count and traffic_percent that would be.
    """
    _check('request_rate', request_rate, low=0)
    _check('traffic_percent', traffic_percent, low=0, high=100, low_open=True)
    _check('interval', interval, low=0, low_open=True)
    _check('count', count, low=1)
    _check('baseline_error_rate', baseline_error_rate, low=0, high=1)
    _check('alpha', alpha, low=0, high=1, low_open=True)
    _check('min_power', min_power, low=0, high=1, low_open=True)
    _check('latency_ratio', latency_ratio, low=1, low_open=True)
    _check('error_increase', error_increase, low=0, high=1, low_open=True)
    share = traffic_percent / 100.0
    target_rate = min(1.0, baseline_error_rate + max(baseline_error_rate, error_increase))

    def powers(count_, share_):
        window = interval * count_
        canary = request_rate * window * share_
        baseline = request_rate * window * (1 - share_)
        return (error_power(canary, baseline, baseline_error_rate, target_rate, alpha, error_tolerance,
                            max_absolute, min_samples),
                latency_power(canary, baseline, latency_ratio, alpha, latency_tolerance, min_samples, log_sd))

    window = interval * count
    canary_requests = request_rate * window * share
    baseline_requests = request_rate * window * (1 - share)
    err, lat = powers(count, share)
    ok = err >= min_power and lat >= min_power
    result = {
        'request_rate': request_rate,
        'traffic_percent': traffic_percent,
        'window_seconds': window,
        'canary_requests': int(canary_requests),
        'baseline_requests': int(baseline_requests),
        'baseline_error_rate': baseline_error_rate,
        'min_power': min_power,
        'error_target_rate': target_rate,
        'error_power': round(err, 4),
        'latency_ratio': latency_ratio,
        'latency_power': round(lat, 4),
        'detectable_error_rate': _smallest(lambda rate: error_power(
            canary_requests, baseline_requests, baseline_error_rate, rate, alpha, error_tolerance, max_absolute,
            min_samples) >= min_power, baseline_error_rate, 1.0),
        'detectable_latency_ratio': _smallest(lambda r: latency_power(
            canary_requests, baseline_requests, r, alpha, latency_tolerance, min_samples, log_sd) >= min_power,
            1.0, 100.0),
        'ok': ok,
        'needed_count': None,
        'needed_traffic_percent': None,
    }
    if not ok and request_rate > 0:
        result['needed_count'] = _first(lambda c: min(powers(c, share)) >= min_power, int(count), MAX_COUNT)
        needed = _first(lambda pct: min(powers(count, pct / 100.0)) >= min_power, int(traffic_percent) + 1, 50)
        result['needed_traffic_percent'] = needed
    return result


def _first(good, low, high):
    """Smallest integer in low..high for which good() holds, or None.

    A scan, not a bisection: error counts are whole numbers, so the power
    is not monotone in the window (it dips where the count needed to be
    significant steps up).
    """
    for value in range(max(1, low), high + 1):
        if good(value):
            return value
    return None


def _smallest(good, low, high, steps=40):
    """Smallest value in (low, high] for which good() holds (monotone), rounded up to 3 digits, or None."""
    if not good(high):
        return None
    for dummy in range(steps):
        middle = (low + high) / 2.0
        if good(middle):
            high = middle
        else:
            low = middle
    unit = 10.0 ** (math.floor(math.log10(high)) - 2)
    return float('%.3g' % (math.ceil(high / unit - 1e-9) * unit))


def describe(result):
    """One line for people: what the window can and cannot catch."""
    line = ('%s req/s x %s%% x %s s window: ~%d canary requests (vs %d baseline); power %.2f to catch %s errors '
            '(baseline %s), %.2f to catch a %sx slower median (needs %.2f)'
            % (_num(result['request_rate']), _num(result['traffic_percent']), _num(result['window_seconds']),
               result['canary_requests'], result['baseline_requests'], result['error_power'],
               _pct(result['error_target_rate']), _pct(result['baseline_error_rate']), result['latency_power'],
               _num(result['latency_ratio']), result['min_power']))
    caught = []
    if result['detectable_error_rate'] is not None:
        caught.append('error rates from %s' % _pct(result['detectable_error_rate']))
    if result['detectable_latency_ratio'] is not None:
        caught.append('medians from %sx' % _num(result['detectable_latency_ratio']))
    line += '; detectable: %s' % (', '.join(caught) or 'nothing')
    return line


def fix(result, interval):
    """How to make an underpowered plan sufficient, naming the variables."""
    fixes = []
    if result['needed_count'] is not None:
        fixes.append('canary_analysis_count=%d (a %s s window)' % (
            result['needed_count'], _num(result['needed_count'] * interval)))
    if result['needed_traffic_percent'] is not None:
        fixes.append('canary_traffic_percent=%d' % result['needed_traffic_percent'])
    if not fixes:
        return 'no window up to %d intervals nor traffic share up to 50%% is enough at %s req/s' % (
            MAX_COUNT, _num(result['request_rate']))
    return 'raise ' + ' or '.join(fixes)


def _num(value):
    return '%.4g' % value


def _pct(rate):
    return '%.3g%%' % (rate * 100.0)
