# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Baseline-vs-canary judgement (Kayenta style), pure computation.

Private to grayrelease.canary. Stdlib only: the statistics are implemented
here instead of importing scipy so the module runs on any managed host.
The unit tests check the p-values against scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

KINDS = ('samples', 'ratio')
DIRECTIONS = ('increase', 'decrease', 'either')
BAD_CLASSIFICATION = {
    'increase': ('high',),
    'decrease': ('low',),
    'either': ('high', 'low'),
}
METRIC_DEFAULTS = {
    'direction': 'increase',
    'tolerance': 0.25,
    'max_absolute': 0.01,
    'critical': False,
    'weight': 1,
    'min_samples': 20,
}
METRIC_KEYS = frozenset(('name', 'kind', 'baseline', 'canary')) | frozenset(METRIC_DEFAULTS)


class JudgeError(ValueError):
    """Invalid judge input; the message names the offending value."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value):
    return _is_number(value) and math.isfinite(value)


def _is_list(value):
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


# ---------------------------------------------------------------- statistics

def _normal_two_sided(z):
    """P(|Z| >= z) for a standard normal Z; erfc keeps precision in the tail."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def mann_whitney_p(canary, baseline):
    """Two-sided Mann-Whitney U p-value, normal approximation.

    Tie-corrected variance and a 0.5 continuity correction, the same
    computation as scipy.stats.mannwhitneyu(canary, baseline,
    alternative='two-sided', method='asymptotic', use_continuity=True).
    """
    n1 = len(canary)
    n2 = len(baseline)
    if n1 == 0 or n2 == 0:
        raise JudgeError('Mann-Whitney U needs at least one value on each side')
    pooled = sorted([(float(v), 0) for v in canary] + [(float(v), 1) for v in baseline])
    n = n1 + n2
    rank_sum_canary = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        value = pooled[i][0]
        while j + 1 < n and pooled[j + 1][0] == value:
            j += 1
        count = j - i + 1
        # Tied values share the mean of the ranks they span (1-based).
        mean_rank = (i + j + 2) / 2.0
        in_canary = sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        rank_sum_canary += mean_rank * in_canary
        tie_term += float(count) ** 3 - count
        i = j + 1
    u1 = rank_sum_canary - n1 * (n1 + 1) / 2.0
    u = max(u1, n1 * n2 - u1)
    mu = n1 * n2 / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        # Every value is equal: no evidence of any difference.
        return 1.0
    z = (u - mu - 0.5) / math.sqrt(variance)
    if z <= 0:
        # scipy clips 2 * sf(z) > 1 to 1; same result without the detour.
        return 1.0
    return min(1.0, _normal_two_sided(z))


def two_proportion_p(errors_canary, total_canary, errors_baseline, total_baseline):
    """Two-sided pooled two-proportion z-test p-value (1 when variance is 0)."""
    p1 = errors_canary / float(total_canary)
    p2 = errors_baseline / float(total_baseline)
    pooled = (errors_canary + errors_baseline) / float(total_canary + total_baseline)
    variance = pooled * (1.0 - pooled) * (1.0 / total_canary + 1.0 / total_baseline)
    if variance <= 0:
        return 1.0
    return min(1.0, _normal_two_sided((p1 - p2) / math.sqrt(variance)))


# ---------------------------------------------------------------- validation

def _check_samples(name, side, values):
    if not _is_list(values):
        raise JudgeError('metric %r: %s must be a list of numbers, got %r' % (name, side, values))
    for value in values:
        if not _is_number(value) or math.isnan(value) or math.isinf(value):
            raise JudgeError('metric %r: %s contains %r, which is not a finite number' % (name, side, value))
    return values


def _check_counts(name, side, counts):
    if not isinstance(counts, Mapping):
        raise JudgeError('metric %r: %s must be a dict with errors and total, got %r' % (name, side, counts))
    for key in counts:
        if key not in ('errors', 'total'):
            raise JudgeError('metric %r: %s has unknown key %r (expected errors and total)' % (name, side, key))
    values = {}
    for key in ('errors', 'total'):
        if key not in counts:
            raise JudgeError('metric %r: %s is missing %r' % (name, side, key))
        value = counts[key]
        if not _is_number(value) or math.isnan(value) or math.isinf(value):
            raise JudgeError('metric %r: %s.%s %r is not a number' % (name, side, key, value))
        if value < 0:
            raise JudgeError('metric %r: %s.%s %r is negative' % (name, side, key, value))
        values[key] = value
    if values['errors'] > values['total']:
        raise JudgeError('metric %r: %s.errors %r is greater than %s.total %r'
                         % (name, side, values['errors'], side, values['total']))
    return values


def normalize_metric(metric, index=0):
    """Validate one metric dict and return it with defaults filled in."""
    if not isinstance(metric, Mapping):
        raise JudgeError('metrics[%d] must be a dict, got %r' % (index, metric))
    name = metric.get('name')
    if not isinstance(name, str) or not name:
        raise JudgeError('metrics[%d]: name %r must be a non-empty string' % (index, name))
    for key in metric:
        if key not in METRIC_KEYS:
            raise JudgeError('metric %r: unknown key %r' % (name, key))
    kind = metric.get('kind')
    if kind not in KINDS:
        raise JudgeError('metric %r: kind %r is not one of %s' % (name, kind, ', '.join(KINDS)))
    result = dict(METRIC_DEFAULTS)
    for key, value in metric.items():
        if value is not None:
            result[key] = value
    if kind == 'samples' and metric.get('max_absolute') is not None:
        raise JudgeError('metric %r: max_absolute applies to the ratio kind only' % (name,))
    if result['direction'] not in DIRECTIONS:
        raise JudgeError('metric %r: direction %r is not one of %s'
                         % (name, result['direction'], ', '.join(DIRECTIONS)))
    for key in ('tolerance', 'max_absolute'):
        value = result[key]
        if not _is_finite(value) or value < 0:
            raise JudgeError('metric %r: %s %r must be a number >= 0' % (name, key, value))
    if not isinstance(result['critical'], bool):
        raise JudgeError('metric %r: critical %r must be true or false' % (name, result['critical']))
    weight = result['weight']
    if not _is_finite(weight) or weight <= 0:
        raise JudgeError('metric %r: weight %r must be a number > 0' % (name, weight))
    min_samples = result['min_samples']
    if not _is_number(min_samples) or min_samples != int(min_samples) or min_samples < 1:
        raise JudgeError('metric %r: min_samples %r must be an integer >= 1' % (name, min_samples))
    result['min_samples'] = int(min_samples)
    for side in ('baseline', 'canary'):
        if side not in metric or metric[side] is None:
            raise JudgeError('metric %r: %s is missing' % (name, side))
        if kind == 'samples':
            result[side] = _check_samples(name, side, metric[side])
        else:
            result[side] = _check_counts(name, side, metric[side])
    return result


def _check_options(confidence, pass_score, marginal_score):
    if not _is_finite(confidence) or confidence <= 0 or confidence >= 1:
        raise JudgeError('confidence %r must be a number between 0 and 1 (exclusive)' % (confidence,))
    for label, value in (('pass_score', pass_score), ('marginal_score', marginal_score)):
        if not _is_finite(value) or value < 0 or value > 100:
            raise JudgeError('%s %r must be a number from 0 to 100' % (label, value))
    if marginal_score > pass_score:
        raise JudgeError('marginal_score %r must not be above pass_score %r' % (marginal_score, pass_score))


# ---------------------------------------------------------------- judgement

def _fmt(value):
    return '%.6g' % value


def classify(metric, alpha):
    """Classify one normalized metric; returns the per-metric result dict."""
    name = metric['name']
    kind = metric['kind']
    tolerance = metric['tolerance']
    if kind == 'samples':
        base, can = metric['baseline'], metric['canary']
        n_base, n_can = len(base), len(can)
        base_value = statistics.median(base) if base else None
        can_value = statistics.median(can) if can else None
        what = 'median'
        extra = 0.0
    else:
        n_base, n_can = metric['baseline']['total'], metric['canary']['total']
        base_value = metric['baseline']['errors'] / float(n_base) if n_base else None
        can_value = metric['canary']['errors'] / float(n_can) if n_can else None
        what = 'rate'
        extra = metric['max_absolute']
    result = {
        'kind': kind,
        'direction': metric['direction'],
        'critical': metric['critical'],
        'weight': metric['weight'],
        'baseline': base_value,
        'canary': can_value,
        'baseline_count': n_base,
        'canary_count': n_can,
        'p_value': None,
        'failed': False,
    }
    if n_base < metric['min_samples'] or n_can < metric['min_samples']:
        result['classification'] = 'nodata'
        result['reason'] = ('%s: %s baseline and %s canary %s, below min_samples %d'
                            % (name, _fmt(n_base), _fmt(n_can),
                               'values' if kind == 'samples' else 'requests', metric['min_samples']))
        return result
    if kind == 'samples':
        p_value = mann_whitney_p(metric['canary'], metric['baseline'])
    else:
        p_value = two_proportion_p(metric['canary']['errors'], n_can, metric['baseline']['errors'], n_base)
    result['p_value'] = p_value
    upper = base_value * (1 + tolerance) + extra
    lower = base_value * (1 - tolerance) - extra
    significant = p_value < alpha
    if significant and can_value > upper:
        classification = 'high'
    elif significant and can_value < lower:
        classification = 'low'
    else:
        classification = 'pass'
    failed = classification in BAD_CLASSIFICATION[metric['direction']]
    result['classification'] = classification
    result['failed'] = failed
    comparison = ('canary %s %s vs baseline %s (allowed %s..%s), p=%.3g %s alpha %.3g'
                  % (what, _fmt(can_value), _fmt(base_value), _fmt(lower), _fmt(upper), p_value,
                     '<' if significant else '>=', alpha))
    if classification == 'pass':
        verdict = 'pass'
    elif failed:
        verdict = 'FAILED (%s, direction %s)' % (classification, metric['direction'])
    else:
        verdict = 'pass (%s, allowed by direction %s)' % (classification, metric['direction'])
    result['reason'] = '%s: %s: %s' % (name, verdict, comparison)
    return result


def judge(metrics, confidence=0.98, pass_score=95, marginal_score=75):
    """Judge all metrics; returns dict with verdict, score, metrics, reason."""
    _check_options(confidence, pass_score, marginal_score)
    if not _is_list(metrics) or not metrics:
        raise JudgeError('metrics must be a non-empty list of metric dicts, got %r' % (metrics,))
    normalized = []
    seen = set()
    for index, metric in enumerate(metrics):
        item = normalize_metric(metric, index)
        if item['name'] in seen:
            raise JudgeError('duplicate metric name %r' % (item['name'],))
        seen.add(item['name'])
        normalized.append(item)

    alpha = 1.0 - confidence
    results = {}
    weight_with_data = 0.0
    weight_passing = 0.0
    critical_nodata = []
    critical_failed = []
    failed = []
    for metric in normalized:
        res = classify(metric, alpha)
        results[metric['name']] = res
        if res['classification'] == 'nodata':
            if metric['critical']:
                critical_nodata.append(metric['name'])
            continue
        weight_with_data += metric['weight']
        if res['failed']:
            failed.append(metric['name'])
            if metric['critical']:
                critical_failed.append(metric['name'])
        else:
            weight_passing += metric['weight']

    score = 100.0 * weight_passing / weight_with_data if weight_with_data else None
    if score is None:
        verdict = 'inconclusive'
        reason = 'no metric has enough data'
    elif critical_nodata:
        verdict = 'inconclusive'
        reason = 'critical metric(s) without enough data: %s' % ', '.join(critical_nodata)
    elif critical_failed:
        verdict = 'fail'
        reason = 'critical metric(s) failed: %s' % ', '.join(critical_failed)
    elif score < marginal_score:
        verdict = 'fail'
        reason = 'score %.4g below marginal_score %s' % (score, _fmt(marginal_score))
    elif score < pass_score:
        verdict = 'marginal'
        reason = 'score %.4g below pass_score %s' % (score, _fmt(pass_score))
    else:
        verdict = 'pass'
        reason = 'score %.4g reaches pass_score %s' % (score, _fmt(pass_score))
    if failed and verdict != 'fail':
        reason += '; failed: %s' % ', '.join(failed)
    return {
        'verdict': verdict,
        'score': score,
        'metrics': results,
        'failed_metrics': failed,
        'reason': reason,
    }
