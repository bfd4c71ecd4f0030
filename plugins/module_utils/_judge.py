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
# Critical thresholds (Kayenta's critical increase): an effect this large fails
# the verdict outright, whatever the score. Samples kind: the ratio of the
# medians (2 = twice as slow); ratio kind: the difference of the rates
# (0.05 = 5 percentage points more errors). 0 switches the check off.
CRITICAL_RATIO = 2.0
# A difference is significant when p < 1 - CONFIDENCE.
CONFIDENCE = 0.98
CRITICAL_DIFFERENCE = 0.05
# Which option holds the critical threshold of each kind; the other kind's
# option is rejected on it (like max_absolute on samples).
CRITICAL_OPTION = {'samples': 'critical_ratio', 'ratio': 'critical_difference'}
METRIC_KEYS = (frozenset(('name', 'kind', 'baseline', 'canary')) | frozenset(METRIC_DEFAULTS)
               | frozenset(CRITICAL_OPTION.values()))


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


def _log_comb(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(errors_canary, total_canary, errors_baseline, total_baseline, alternative='greater'):
    """One-sided Fisher exact test of the canary's error rate against the
    baseline's: 'greater' = the canary's is higher, 'less' = lower. Equal to
    scipy.stats.fisher_exact([[ec, tc - ec], [eb, tb - eb]], alternative).pvalue.
    Valid for any counts, unlike the z-test's normal approximation."""
    total, errors = total_canary + total_baseline, errors_canary + errors_baseline
    low, high = max(0, total_canary - (total - errors)), min(total_canary, errors)
    whole = _log_comb(total, total_canary)
    tail = range(errors_canary, high + 1) if alternative == 'greater' else range(low, errors_canary + 1)
    return min(1.0, sum(math.exp(_log_comb(errors, x) + _log_comb(total - errors, total_canary - x) - whole)
                        for x in tail))


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


def check_critical(option, value, where=''):
    """A critical threshold: 0 (off), a ratio > 1, or a rate difference in (0, 1]."""
    if option == 'critical_ratio':
        if not _is_finite(value) or (value != 0 and value <= 1):
            raise JudgeError('%scritical_ratio %r must be 0 (off) or a median ratio above 1, e.g. 2 for twice'
                             % (where, value))
    elif not _is_finite(value) or value < 0 or value > 1:
        raise JudgeError('%scritical_difference %r must be 0 (off) or an error-rate difference up to 1, '
                         'e.g. 0.05 for 5 points' % (where, value))
    return float(value)


def normalize_metric(metric, index=0, critical_ratio=CRITICAL_RATIO, critical_difference=CRITICAL_DIFFERENCE):
    """Validate one metric dict and return it with defaults filled in.

    critical_ratio / critical_difference: the thresholds a metric of that
    kind gets when it does not set its own.
    """
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
    option = CRITICAL_OPTION[kind]
    for other_kind, other in CRITICAL_OPTION.items():
        if other != option and metric.get(other) is not None:
            raise JudgeError('metric %r: %s applies to the %s kind only' % (name, other, other_kind))
    default = critical_ratio if kind == 'samples' else critical_difference
    result[option] = check_critical(option, metric[option] if metric.get(option) is not None else default,
                                    'metric %r: ' % (name,))
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


def format_p(p_value):
    """A p-value for reading: 3 significant digits, '<0.001' below that, '-' for none."""
    if p_value is None:
        return '-'
    if p_value < 0.001:
        return '<0.001'
    return '%.3g' % p_value


def _pct(fraction):
    """+0.38 -> '+38%'; large changes without an exponent (+1210%)."""
    value = fraction * 100.0
    return ('%+.0f%%' if abs(value) >= 100 else '%+.3g%%') % value


def _rate(rate):
    return '%.3g%%' % (rate * 100.0)


def _points(difference):
    return '%+.3g points' % (difference * 100.0)


def _median_ratio(base_value, can_value):
    if base_value > 0:
        return can_value / float(base_value)
    return math.inf if can_value > 0 else 1.0


def _ratio_text(ratio):
    return 'inf' if math.isinf(ratio) else '%.3gx' % ratio


def _critical_breach(metric, base_value, can_value):
    """The critical rule text when the effect reaches the metric's critical threshold, else None."""
    direction = metric['direction']
    if metric['kind'] == 'samples':
        limit = metric['critical_ratio']
        if not limit:
            return None
        ratio = _median_ratio(base_value, can_value)
        if direction in ('increase', 'either') and ratio >= limit:
            return 'critical: median %s >= %s' % (_ratio_text(ratio), _ratio_text(limit))
        if direction in ('decrease', 'either') and ratio * limit <= 1:
            return 'critical: median %s <= 1/%s' % (_ratio_text(ratio), _ratio_text(limit))
        return None
    limit = metric['critical_difference']
    if not limit:
        return None
    difference = can_value - base_value
    if direction in ('increase', 'either') and difference >= limit:
        return 'critical: rate %s >= +%.3g points' % (_points(difference), limit * 100.0)
    if direction in ('decrease', 'either') and -difference >= limit:
        return 'critical: rate %s <= -%.3g points' % (_points(difference), limit * 100.0)
    return None


def _beyond_text(metric, classification, base_value, can_value, lower, upper):
    """'+38% > tolerance +25%' (samples) or 'rate 3.1% > allowed 1.25%' (ratio)."""
    high = classification == 'high'
    sign = '>' if high else '<'
    if metric['kind'] == 'samples':
        if base_value == 0:
            return 'median %s from a baseline of 0' % _fmt(can_value)
        bound = metric['tolerance'] if high else -metric['tolerance']
        return '%s %s tolerance %s' % (_pct(can_value / float(base_value) - 1), sign, _pct(bound))
    return 'rate %s %s allowed %s' % (_rate(can_value), sign, _rate(max(0.0, upper if high else lower)))


def _allowed(base_value, tolerance, extra):
    """(lower, upper): how far the canary's median or rate may move before it counts as worse."""
    return base_value * (1 - tolerance) - extra, base_value * (1 + tolerance) + extra


def _rate_effect_text(base_value, can_value):
    return 'rate %s (%s vs %s)' % (_points(can_value - base_value), _rate(can_value), _rate(base_value))


def _metric_reason(metric, classification, failed, breach, rule, what, values, counts):
    """The one line a classified metric says of itself; values: (canary, baseline, lower, upper),
    counts: (canary, baseline)."""
    if classification == 'pass':
        verdict = 'pass'
    elif failed:
        verdict = 'FAILED (%s%s, direction %s)' % (classification, ', critical threshold' if breach else '',
                                                   metric['direction'])
    else:
        verdict = 'pass (%s, allowed by direction %s)' % (classification, metric['direction'])
    can_value, base_value, lower, upper = values
    return '%s: %s: %s; canary %s %s vs baseline %s (allowed %s..%s), n=%s/%s' % (
        metric['name'], verdict, rule, what, _fmt(can_value), _fmt(base_value), _fmt(lower), _fmt(upper),
        _fmt(counts[0]), _fmt(counts[1]))


def _few_but_clear(metric, result, alpha, base_value, can_value):
    """A ratio metric with fewer than min_samples requests on a side is
    nodata, unless an exact test shows it beyond its allowed rate in its bad
    direction (7 errors in 12 canary requests against 0 in 108 is no lack of
    data). Few requests never make a metric pass. Changes `result` and says
    so; False when it stays nodata."""
    n_base, n_can = result['baseline_count'], result['canary_count']
    if metric['kind'] != 'ratio' or not n_base or not n_can:
        return False
    lower, upper = _allowed(base_value, metric['tolerance'], metric['max_absolute'])
    if can_value > upper:
        classification, alternative, bound = 'high', 'greater', upper
    elif can_value < lower:
        classification, alternative, bound = 'low', 'less', lower
    else:
        return False
    if classification not in BAD_CLASSIFICATION[metric['direction']]:
        return False
    p_value = fisher_exact_p(metric['canary']['errors'], n_can, metric['baseline']['errors'], n_base, alternative)
    if metric['direction'] == 'either':
        p_value = min(1.0, 2 * p_value)
    if p_value >= alpha:
        return False
    breach = _critical_breach(metric, base_value, can_value)
    p_text = format_p(p_value)
    few = result['rule'].split(': ', 1)[1]
    rule = 'few requests (%s), but Fisher\'s exact test shows it: p%s%s < %.3g, rate %s %s allowed %s' % (
        few, '' if p_text.startswith('<') else '=', p_text, alpha, _rate(can_value),
        '>' if classification == 'high' else '<', _rate(max(0.0, bound)))
    if breach:
        rule = '%s and %s' % (breach, rule)
    result.update(classification=classification, failed=True, critical_breach=bool(breach), p_value=p_value,
                  p_text=p_text, effect=can_value - base_value, exact_test=True, rule=rule,
                  effect_text=_rate_effect_text(base_value, can_value))
    result['thresholds'].update(allowed_low=lower, allowed_high=upper)
    result['reason'] = _metric_reason(metric, classification, True, breach, rule, 'rate',
                                      (can_value, base_value, lower, upper), (n_can, n_base))
    return True


def classify(metric, alpha, exact_below_min_samples=False):
    """Classify one normalized metric; returns the per-metric result dict.

    Besides the classification it says why, for people and machines:
    effect (median ratio, or rate difference), p_text, thresholds, and rule
    (the one test that decided, e.g. 'critical: median 13.1x >= 2x').
    """
    name = metric['name']
    kind = metric['kind']
    tolerance = metric['tolerance']
    critical_option = CRITICAL_OPTION[kind]
    if kind == 'samples':
        base, can = metric['baseline'], metric['canary']
        n_base, n_can = len(base), len(can)
        base_value = statistics.median(base) if base else None
        can_value = statistics.median(can) if can else None
        what = 'median'
        extra = 0.0
        unit = 'values'
    else:
        n_base, n_can = metric['baseline']['total'], metric['canary']['total']
        base_value = metric['baseline']['errors'] / float(n_base) if n_base else None
        can_value = metric['canary']['errors'] / float(n_can) if n_can else None
        what = 'rate'
        extra = metric['max_absolute']
        unit = 'requests'
    thresholds = {'alpha': alpha, 'tolerance': tolerance, 'min_samples': metric['min_samples'],
                  critical_option: metric[critical_option], 'allowed_low': None, 'allowed_high': None}
    if kind == 'ratio':
        thresholds['max_absolute'] = extra
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
        'p_text': '-',
        'effect': None,
        'effect_text': '-',
        'thresholds': thresholds,
        'critical_breach': False,
        'failed': False,
    }
    if n_base < metric['min_samples'] or n_can < metric['min_samples']:
        short = [('%s baseline' % _fmt(n_base)) if n_base < metric['min_samples'] else None,
                 ('%s canary' % _fmt(n_can)) if n_can < metric['min_samples'] else None]
        result['classification'] = 'nodata'
        result['rule'] = 'nodata: %s %s < min_samples %d' % (
            ' and '.join(x for x in short if x), unit, metric['min_samples'])
        result['reason'] = '%s: %s' % (name, result['rule'])
        if exact_below_min_samples:
            _few_but_clear(metric, result, alpha, base_value, can_value)
        return result
    if kind == 'samples':
        p_value = mann_whitney_p(metric['canary'], metric['baseline'])
        ratio = _median_ratio(base_value, can_value)
        result['effect'] = None if math.isinf(ratio) else ratio
        change = 'from 0' if math.isinf(ratio) else _pct(ratio - 1)
        result['effect_text'] = 'median %s (%s)' % (_ratio_text(ratio), change)
    else:
        p_value = two_proportion_p(metric['canary']['errors'], n_can, metric['baseline']['errors'], n_base)
        result['effect'] = can_value - base_value
        result['effect_text'] = _rate_effect_text(base_value, can_value)
    result['p_value'] = p_value
    p_text = format_p(p_value)
    result['p_text'] = p_text
    lower, upper = _allowed(base_value, tolerance, extra)
    thresholds['allowed_low'], thresholds['allowed_high'] = lower, upper
    significant = p_value < alpha
    p_rule = 'p%s%s %s %.3g' % ('' if p_text.startswith('<') else '=', p_text, '<' if significant else '>=', alpha)
    breach = _critical_breach(metric, base_value, can_value) if significant else None
    if breach:
        classification = 'high' if can_value > base_value else 'low'
        rule = '%s and %s' % (breach, p_rule)
    elif significant and can_value > upper:
        classification = 'high'
        rule = 'significant increase %s and %s' % (
            p_rule, _beyond_text(metric, 'high', base_value, can_value, lower, upper))
    elif significant and can_value < lower:
        classification = 'low'
        rule = 'significant decrease %s and %s' % (
            p_rule, _beyond_text(metric, 'low', base_value, can_value, lower, upper))
    elif significant:
        classification = 'pass'
        if kind == 'samples':
            within = 'median %s within tolerance %s' % (_pct(_median_ratio(base_value, can_value) - 1),
                                                        _pct(tolerance).replace('+', '+/-'))
        else:
            within = 'rate %s within allowed %s..%s' % (_rate(can_value), _rate(max(0.0, lower)), _rate(upper))
        rule = 'significant but %s (%s)' % (within, p_rule)
    else:
        classification = 'pass'
        rule = 'no significant difference: %s' % p_rule
    failed = classification in BAD_CLASSIFICATION[metric['direction']]
    if classification != 'pass' and not failed:
        rule += '; allowed by direction %s' % metric['direction']
    result['classification'] = classification
    result['failed'] = failed
    result['critical_breach'] = bool(breach) and failed
    result['rule'] = rule
    result['reason'] = _metric_reason(metric, classification, failed, breach, rule, what,
                                      (can_value, base_value, lower, upper), (n_can, n_base))
    return result


def judge(metrics, confidence=CONFIDENCE, pass_score=95, marginal_score=75,
          critical_ratio=CRITICAL_RATIO, critical_difference=CRITICAL_DIFFERENCE, exact_below_min_samples=False):
    """Judge all metrics; returns dict with verdict, score, metrics, reason.

    critical_ratio / critical_difference: the critical thresholds of the
    metrics that do not set their own (0 = off). Besides `reason` the result
    names the rule class that decided (`decided_by`) and the thresholds used.
    exact_below_min_samples: a ratio metric below min_samples still fails
    when Fisher's exact test shows it beyond its allowed rate (the rollout's
    judge; canary_judge keeps the plain nodata rule).
    """
    _check_options(confidence, pass_score, marginal_score)
    critical_ratio = check_critical('critical_ratio', critical_ratio)
    critical_difference = check_critical('critical_difference', critical_difference)
    if not _is_list(metrics) or not metrics:
        raise JudgeError('metrics must be a non-empty list of metric dicts, got %r' % (metrics,))
    normalized = []
    seen = set()
    for index, metric in enumerate(metrics):
        item = normalize_metric(metric, index, critical_ratio, critical_difference)
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
    breached = []
    failed = []
    for metric in normalized:
        res = classify(metric, alpha, exact_below_min_samples)
        results[metric['name']] = res
        if res['classification'] == 'nodata':
            if metric['critical']:
                critical_nodata.append(metric['name'])
            continue
        weight_with_data += metric['weight']
        if res['failed']:
            failed.append(metric['name'])
            if res['critical_breach']:
                breached.append(metric['name'])
            if metric['critical']:
                critical_failed.append(metric['name'])
        else:
            weight_passing += metric['weight']

    score = 100.0 * weight_passing / weight_with_data if weight_with_data else None
    # A breach of a critical threshold is evidence of a large regression:
    # it fails even when another metric has no data.
    if breached:
        verdict, decided_by = 'fail', 'critical_threshold'
        reason = 'critical threshold reached: %s' % '; '.join(
            '%s (%s)' % (name, results[name]['rule']) for name in breached)
    elif score is None:
        verdict, decided_by = 'inconclusive', 'nodata'
        reason = 'no metric has enough data'
    elif critical_nodata:
        verdict, decided_by = 'inconclusive', 'critical_nodata'
        reason = 'critical metric(s) without enough data: %s' % ', '.join(critical_nodata)
    elif critical_failed:
        verdict, decided_by = 'fail', 'critical_metric'
        reason = 'critical metric(s) failed: %s' % ', '.join(critical_failed)
    elif score < marginal_score:
        verdict, decided_by = 'fail', 'score'
        reason = 'score %.4g below marginal_score %s' % (score, _fmt(marginal_score))
    elif score < pass_score:
        verdict, decided_by = 'marginal', 'score'
        reason = 'score %.4g below pass_score %s' % (score, _fmt(pass_score))
    else:
        verdict, decided_by = 'pass', 'score'
        reason = 'score %.4g reaches pass_score %s' % (score, _fmt(pass_score))
    if failed and verdict != 'fail':
        reason += '; failed: %s' % ', '.join(failed)
    return {
        'verdict': verdict,
        'score': score,
        'metrics': results,
        'failed_metrics': failed,
        'critical_breached': breached,
        'decided_by': decided_by,
        'thresholds': {'confidence': confidence, 'alpha': alpha, 'pass_score': pass_score,
                       'marginal_score': marginal_score, 'critical_ratio': critical_ratio,
                       'critical_difference': critical_difference},
        'reason': reason,
    }
