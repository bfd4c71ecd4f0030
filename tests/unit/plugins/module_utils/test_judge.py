# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""canary_judge logic (plugins/module_utils/_judge.py): statistics against scipy, rules of DESIGN.md."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import (
    JudgeError,
    fisher_exact_p,
    format_p,
    judge,
    mann_whitney_p,
    two_proportion_p,
)

scipy_stats = pytest.importorskip('scipy.stats')


def _scipy_mwu(canary, baseline):
    return float(scipy_stats.mannwhitneyu(canary, baseline, alternative='two-sided',
                                          method='asymptotic', use_continuity=True).pvalue)


# ---------------------------------------------------------------- statistics vs scipy

def test_mann_whitney_matches_scipy_on_random_tied_inputs():
    rng = random.Random(20261126)
    checked = 0
    for case in range(600):
        n1 = rng.randint(1, 60)
        n2 = rng.randint(1, 60)
        if n1 + n2 < 3:
            continue
        style = case % 4
        if style == 0:    # heavy ties: few distinct integers
            span = rng.randint(1, 4)
            canary = [rng.randint(0, span) for dummy in range(n1)]
            baseline = [rng.randint(0, span) for dummy in range(n2)]
        elif style == 1:  # shifted distributions with rounding ties
            canary = [round(rng.gauss(10.3, 2), 1) for dummy in range(n1)]
            baseline = [round(rng.gauss(10, 2), 1) for dummy in range(n2)]
        elif style == 2:  # continuous, few ties
            canary = [rng.expovariate(1.0) * 1.5 for dummy in range(n1)]
            baseline = [rng.expovariate(1.0) for dummy in range(n2)]
        else:             # mixed ints and floats with large separation
            canary = [rng.choice([1, 2, 2.0, 3.5, 100]) for dummy in range(n1)]
            baseline = [rng.choice([0, 1, 1.0, 2]) for dummy in range(n2)]
        if len(set(canary + baseline)) == 1:
            continue
        expected = _scipy_mwu(canary, baseline)
        assert abs(mann_whitney_p(canary, baseline) - expected) <= 1e-6, (canary, baseline)
        checked += 1
    assert checked > 500


def test_mann_whitney_matches_scipy_on_large_samples():
    rng = random.Random(7)
    canary = [round(rng.lognormvariate(3, 0.5)) for dummy in range(5000)]
    baseline = [round(rng.lognormvariate(3.02, 0.5)) for dummy in range(4000)]
    assert abs(mann_whitney_p(canary, baseline) - _scipy_mwu(canary, baseline)) <= 1e-6


def test_mann_whitney_is_symmetric_and_one_when_all_equal():
    assert mann_whitney_p([5] * 30, [5] * 25) == 1.0
    assert mann_whitney_p([5.0], [5]) == 1.0
    a, b = [1, 2, 3, 9, 9], [4, 5, 6, 7, 7, 8]
    assert mann_whitney_p(a, b) == pytest.approx(mann_whitney_p(b, a), abs=1e-12)


def test_two_proportion_matches_chi_square_without_correction():
    # The pooled two-proportion z-test is the 2x2 chi-square test (z^2 = chi2).
    rng = random.Random(11)
    for dummy in range(200):
        t1, t2 = rng.randint(1, 5000), rng.randint(1, 5000)
        e1, e2 = rng.randint(0, t1), rng.randint(0, t2)
        if e1 + e2 == 0 or e1 + e2 == t1 + t2:
            assert two_proportion_p(e1, t1, e2, t2) == 1.0
            continue
        table = [[e1, t1 - e1], [e2, t2 - e2]]
        expected = scipy_stats.chi2_contingency(table, correction=False)[1]
        assert two_proportion_p(e1, t1, e2, t2) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_two_proportion_zero_variance_is_one():
    assert two_proportion_p(0, 100, 0, 50) == 1.0
    assert two_proportion_p(100, 100, 50, 50) == 1.0


# ---------------------------------------------------------------- classification

def _samples(name, baseline, canary, **kw):
    return dict(name=name, kind='samples', baseline=baseline, canary=canary, **kw)


def _ratio(name, be, bt, ce, ct, **kw):
    return dict(name=name, kind='ratio', baseline={'errors': be, 'total': bt},
                canary={'errors': ce, 'total': ct}, **kw)


BASE = [10 + (i % 7) for i in range(40)]          # median 13
HIGH = [20 + (i % 7) for i in range(40)]          # median 23: way above 13 * 1.25
SLIGHT = [11 + (i % 7) for i in range(40)]        # median 14: significant-ish but within 25%
LOW = [2 + (i % 7) for i in range(40)]            # median 5


def test_samples_high_low_pass_and_reported_figures():
    res = judge([_samples('lat', BASE, HIGH)])
    m = res['metrics']['lat']
    assert m['classification'] == 'high' and m['failed'] is True
    assert m['baseline'] == statistics.median(BASE) and m['canary'] == statistics.median(HIGH)
    assert m['p_value'] == pytest.approx(_scipy_mwu(HIGH, BASE), abs=1e-6)
    assert 'lat' in m['reason'] and '\n' not in m['reason']
    assert res['verdict'] == 'fail' and res['score'] == 0.0

    low = judge([_samples('lat', BASE, LOW)])['metrics']['lat']
    assert low['classification'] == 'low' and low['failed'] is False  # direction increase

    ok = judge([_samples('lat', BASE, list(BASE))])
    assert ok['metrics']['lat']['classification'] == 'pass' and ok['verdict'] == 'pass' and ok['score'] == 100.0


def test_tolerance_allows_significant_but_small_change():
    p = mann_whitney_p(SLIGHT, BASE)
    m = judge([_samples('lat', BASE, SLIGHT)], confidence=1 - 2 * p)['metrics']['lat']
    assert m['p_value'] < 2 * p
    # 14 <= 13 * 1.25: within tolerance, so pass despite p < alpha.
    assert m['classification'] == 'pass'
    m = judge([_samples('lat', BASE, SLIGHT, tolerance=0.05)], confidence=1 - 2 * p)['metrics']['lat']
    assert m['classification'] == 'high'


def test_not_significant_is_pass_even_when_far_off():
    # Two noisy samples with different medians but p well above alpha.
    base = [1, 100, 2, 90, 3, 80] * 4
    can = [1, 100, 2, 95, 4, 85] * 4
    m = judge([_samples('x', base, can)])['metrics']['x']
    assert m['p_value'] >= 0.02 and m['classification'] == 'pass'


@pytest.mark.parametrize('direction, data, failed', [
    ('increase', HIGH, True), ('increase', LOW, False),
    ('decrease', HIGH, False), ('decrease', LOW, True),
    ('either', HIGH, True), ('either', LOW, True),
])
def test_direction_decides_failure(direction, data, failed):
    m = judge([_samples('m', BASE, data, direction=direction)])['metrics']['m']
    assert m['failed'] is failed


def test_ratio_high_and_max_absolute():
    # 0.5% vs 5%: significant and above 0.005 * 1.25 + 0.01.
    m = judge([_ratio('err', 5, 1000, 50, 1000)])['metrics']['err']
    assert m['classification'] == 'high' and m['failed'] and m['canary'] == 0.05 and m['baseline'] == 0.005
    # 0.5% vs 1.5% is significant but within max_absolute 0.01 (0.00625 + 0.01 = 0.01625).
    m = judge([_ratio('err', 50, 10000, 150, 10000)])['metrics']['err']
    assert m['p_value'] < 0.02 and m['classification'] == 'pass'
    m = judge([_ratio('err', 50, 10000, 150, 10000, max_absolute=0.0)])['metrics']['err']
    assert m['classification'] == 'high'
    zero = judge([_ratio('err', 0, 500, 0, 500)])['metrics']['err']
    assert zero['p_value'] == 1.0 and zero['classification'] == 'pass'


def test_nodata_below_min_samples():
    res = judge([_samples('lat', BASE[:19], HIGH), _ratio('err', 0, 19, 0, 100)])
    assert res['metrics']['lat']['classification'] == 'nodata'
    assert res['metrics']['err']['classification'] == 'nodata'
    assert res['metrics']['lat']['p_value'] is None and res['metrics']['lat']['failed'] is False
    assert res['score'] is None and res['verdict'] == 'inconclusive'
    res = judge([_samples('lat', BASE[:5], HIGH[:5], min_samples=5)])
    assert res['metrics']['lat']['classification'] != 'nodata'


def test_fisher_exact_matches_scipy():
    rnd = random.Random(11)
    cases = [(7, 12, 0, 108), (2, 12, 0, 108), (3, 12, 0, 108), (0, 5, 3, 40), (5, 5, 0, 1), (0, 0, 0, 10),
             (12, 19, 40, 5000)]
    for dummy in range(60):
        tc, tb = rnd.randint(1, 25), rnd.randint(1, 300)
        cases.append((rnd.randint(0, tc), tc, rnd.randint(0, tb), tb))
    for ec, tc, eb, tb in cases:
        for alternative in ('greater', 'less'):
            expected = scipy_stats.fisher_exact([[ec, tc - ec], [eb, tb - eb]], alternative=alternative).pvalue
            assert fisher_exact_p(ec, tc, eb, tb, alternative) == pytest.approx(expected, rel=1e-9, abs=1e-12), \
                (ec, tc, eb, tb, alternative)


def test_few_requests_with_clear_errors_fail_with_the_exact_test():
    # The faults scenario's case on CI: 7 of 12 canary requests were 5xx
    # through HAProxy against 0 of 108 (below min_samples 20), and the
    # probes caught 2 errors in 20 against 0 in 60 (not significant).
    metrics = [_ratio('http_5xx_ratio', 0, 108, 7, 12), _ratio('probe_error_ratio', 0, 60, 2, 20)]
    plain = judge(metrics, confidence=0.995)
    assert plain['metrics']['http_5xx_ratio']['classification'] == 'nodata' and plain['verdict'] == 'pass'
    res = judge(metrics, confidence=0.995, exact_below_min_samples=True)
    m = res['metrics']['http_5xx_ratio']
    assert m['classification'] == 'high' and m['failed'] and m['exact_test'] is True
    assert m['p_value'] == pytest.approx(scipy_stats.fisher_exact([[7, 5], [0, 108]], alternative='greater').pvalue)
    assert m['rule'] == ("critical: rate +58.3 points >= +5 points and few requests (12 canary requests < "
                         "min_samples 20), but Fisher's exact test shows it: p<0.001 < 0.005, rate 58.3% > allowed 1%")
    assert res['verdict'] == 'fail' and res['decided_by'] == 'critical_threshold'
    assert res['failed_metrics'] == ['http_5xx_ratio']


@pytest.mark.parametrize('metric, why', [
    (_ratio('err', 0, 108, 1, 12), 'not significant: 1 in 12'),
    (_ratio('err', 0, 108, 2, 12), 'p=0.0092 >= 0.005'),
    (_ratio('err', 5, 108, 0, 12, direction='increase'), 'lower is never bad for increase'),
    (_ratio('err', 0, 108, 0, 12), 'no errors at all'),
    (_ratio('err', 0, 0, 7, 12), 'no baseline at all'),
    (_samples('lat', BASE, HIGH[:10]), 'samples keep the plain rule'),
])
def test_few_requests_without_clear_evidence_stay_nodata(metric, why):
    res = judge([metric], confidence=0.995, exact_below_min_samples=True)
    assert res['metrics'][metric['name']]['classification'] == 'nodata', why
    assert res['verdict'] == 'inconclusive' and res['failed_metrics'] == []


def test_score_weights_and_verdicts():
    good = _samples('good', BASE, list(BASE), weight=3)
    bad = _samples('bad', BASE, HIGH, weight=1)
    nodata = _samples('none', [], [], weight=100)
    res = judge([good, bad, nodata])
    assert res['score'] == 75.0 and res['verdict'] == 'marginal'
    assert res['failed_metrics'] == ['bad']
    assert judge([good, bad], marginal_score=80)['verdict'] == 'fail'
    assert judge([good, bad], pass_score=75)['verdict'] == 'pass'
    # A critical failing metric fails the verdict regardless of the score.
    crit = dict(bad, critical=True, weight=0.001)
    res = judge([good, crit])
    assert res['score'] > 99 and res['verdict'] == 'fail' and 'bad' in res['reason']
    # A critical metric without data makes it inconclusive.
    res = judge([good, dict(nodata, critical=True)])
    assert res['verdict'] == 'inconclusive' and res['score'] == 100.0


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize('metric, needle', [
    (dict(name='m', kind='histogram', baseline=[], canary=[]), "'histogram'"),
    (dict(name='m', kind='samples', baseline=[], canary=[], direction='up'), "'up'"),
    (dict(name='m', kind='samples', baseline=[1]), "canary"),
    (dict(kind='samples', baseline=[1], canary=[1]), "name None"),
    (dict(name='m', kind='samples', baseline=[1, True], canary=[1]), "True"),
    (dict(name='m', kind='samples', baseline=[1, float('nan')], canary=[1]), "nan"),
    (dict(name='m', kind='samples', baseline=[1], canary='1,2'), "'1,2'"),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], max_absolute=0.1), 'max_absolute'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], colour='red'), "'colour'"),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], weight=0), 'weight 0'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], min_samples=0), 'min_samples 0'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], tolerance=-1), 'tolerance -1'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], critical='yes'), "'yes'"),
    (dict(name='m', kind='ratio', baseline={'errors': -1, 'total': 5}, canary={'errors': 0, 'total': 5}), '-1'),
    (dict(name='m', kind='ratio', baseline={'errors': 6, 'total': 5}, canary={'errors': 0, 'total': 5}), 'errors 6'),
    (dict(name='m', kind='ratio', baseline={'errors': 1}, canary={'errors': 0, 'total': 5}), "'total'"),
    (dict(name='m', kind='ratio', baseline=[1, 2], canary={'errors': 0, 'total': 5}), '[1, 2]'),
    (dict(name='m', kind='ratio', baseline={'errors': 0, 'total': 5, 'x': 1}, canary={'errors': 0, 'total': 5}), "'x'"),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], critical_difference=0.1), 'critical_difference'),
    (dict(name='m', kind='ratio', baseline={'errors': 0, 'total': 5}, canary={'errors': 0, 'total': 5},
          critical_ratio=2), 'critical_ratio applies to the samples kind'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], critical_ratio=1), 'critical_ratio 1 must'),
    (dict(name='m', kind='samples', baseline=[1], canary=[1], critical_ratio=-2), 'critical_ratio -2'),
    (dict(name='m', kind='ratio', baseline={'errors': 0, 'total': 5}, canary={'errors': 0, 'total': 5},
          critical_difference=1.5), 'critical_difference 1.5'),
])
def test_bad_metric_is_named(metric, needle):
    with pytest.raises(JudgeError) as info:
        judge([metric])
    assert needle in str(info.value)


def test_duplicate_names_and_bad_options():
    m = _samples('dup', [1], [1])
    with pytest.raises(JudgeError, match="'dup'"):
        judge([m, dict(m)])
    with pytest.raises(JudgeError, match='confidence 1.5'):
        judge([m], confidence=1.5)
    with pytest.raises(JudgeError, match='marginal_score 96'):
        judge([m], marginal_score=96)
    with pytest.raises(JudgeError, match='metrics'):
        judge([])


def test_all_metrics_nodata_or_equal_never_crash():
    res = judge([_samples('a', [3] * 25, [3] * 25), _ratio('b', 0, 0, 0, 0)])
    assert res['metrics']['a']['p_value'] == 1.0
    assert res['metrics']['b']['classification'] == 'nodata'
    assert res['metrics']['b']['baseline'] is None
    assert not math.isnan(res['score'])


# ---------------------------------------------------------------- critical thresholds

def _regression_300ms(**judge_options):
    """The issue's case: every request 300 ms slower, errors unchanged, the
    three metrics the rollout builds (canary_metrics) with their weights."""
    rng = random.Random(300)
    baseline = [round(rng.gauss(24, 3), 3) for dummy in range(300)]
    canary = [round(rng.gauss(24, 3) + 300, 3) for dummy in range(60)]
    metrics = [
        _ratio('http_5xx_ratio', 0, 1080, 0, 120, weight=2),
        _ratio('probe_error_ratio', 0, 300, 0, 60, critical=True),
        _samples('probe_latency_ms', baseline, canary, tolerance=0.5),
    ]
    return judge(metrics, **judge_options), baseline, canary


def test_300ms_regression_fails_outright():
    res, baseline, canary = _regression_300ms()
    m = res['metrics']['probe_latency_ms']
    assert m['effect'] == pytest.approx(statistics.median(canary) / statistics.median(baseline))
    assert m['effect'] > 10
    assert m['p_value'] == pytest.approx(_scipy_mwu(canary, baseline), abs=1e-6)
    assert m['critical_breach'] is True and m['classification'] == 'high'
    assert m['rule'] == 'critical: median %.3gx >= 2x and p<0.001 < 0.02' % m['effect']
    # Two of three metrics pass (score 75, once only 'marginal'); the breach decides.
    assert res['score'] == 75.0
    assert res['verdict'] == 'fail' and res['decided_by'] == 'critical_threshold'
    assert res['critical_breached'] == ['probe_latency_ms']
    assert 'probe_latency_ms (critical: median' in res['reason']
    # Switched off globally it is the old 'marginal'.
    off, dummy, dummy = _regression_300ms(critical_ratio=0)
    assert off['verdict'] == 'marginal' and off['decided_by'] == 'score' and off['critical_breached'] == []


def test_error_rate_five_points_above_fails_outright():
    heavy = _samples('lat', BASE, list(BASE), weight=100)
    # 1% vs 6.2%: 5.2 points, in a metric worth 1% of the score.
    res = judge([heavy, _ratio('err', 10, 1000, 62, 1000)])
    m = res['metrics']['err']
    assert m['effect'] == pytest.approx(0.052) and m['critical_breach']
    assert m['rule'].startswith('critical: rate +5.2 points >= +5 points and p<0.001')
    assert res['score'] > 99 and res['verdict'] == 'fail'
    # 4.5 points: failed metric but no breach, so the score decides (pass).
    res = judge([heavy, _ratio('err', 10, 1000, 55, 1000)])
    assert res['metrics']['err']['failed'] and not res['metrics']['err']['critical_breach']
    assert res['verdict'] == 'pass'
    # Per metric and global overrides.
    assert judge([heavy, _ratio('err', 10, 1000, 62, 1000, critical_difference=0.1)])['verdict'] == 'pass'
    assert judge([heavy, _ratio('err', 10, 1000, 55, 1000)], critical_difference=0.04)['verdict'] == 'fail'


def test_critical_ratio_override_direction_and_significance():
    base = [100 + (i % 9) for i in range(60)]
    slow = [250 + (i % 9) for i in range(60)]           # 2.5x
    heavy = _samples('other', BASE, list(BASE), weight=100)
    assert judge([heavy, _samples('lat', base, slow)])['verdict'] == 'fail'
    res = judge([heavy, _samples('lat', base, slow, critical_ratio=3)])
    assert res['verdict'] == 'pass' and res['metrics']['lat']['thresholds']['critical_ratio'] == 3
    assert judge([heavy, _samples('lat', base, slow)], critical_ratio=3)['verdict'] == 'pass'
    # The metric's own value wins over the global one.
    assert judge([heavy, _samples('lat', base, slow, critical_ratio=2)], critical_ratio=0)['verdict'] == 'fail'
    # Throughput halved: a breach only for a metric whose bad direction is down.
    fast = [40 + (i % 9) for i in range(60)]            # median 44 / 104 = 0.423x
    assert judge([heavy, _samples('rps', base, fast)])['verdict'] == 'pass'
    res = judge([heavy, _samples('rps', base, fast, direction='decrease')])
    assert res['verdict'] == 'fail' and res['metrics']['rps']['rule'].startswith('critical: median 0.423x <= 1/2x')
    # A large median ratio that is not significant is no evidence.
    noisy = judge([heavy, _samples('lat', [1, 100] * 10, [1, 100, 300] * 7)])['metrics']['lat']
    assert noisy['p_value'] >= 0.02 and not noisy['critical_breach']


def test_breach_beats_a_critical_metric_without_data():
    res = judge([_samples('lat', [10 + i % 3 for i in range(40)], [40 + i % 3 for i in range(40)]),
                 _ratio('probe', 0, 5, 0, 5, critical=True)])
    assert res['verdict'] == 'fail' and res['decided_by'] == 'critical_threshold'
    res = judge([_samples('lat', BASE, list(BASE)), _ratio('probe', 0, 5, 0, 5, critical=True)])
    assert res['verdict'] == 'inconclusive' and res['decided_by'] == 'critical_nodata'


def test_bad_global_critical_thresholds_are_named():
    with pytest.raises(JudgeError, match='critical_ratio 0.5'):
        judge([_samples('a', [1], [1])], critical_ratio=0.5)
    with pytest.raises(JudgeError, match="critical_difference 'x'"):
        judge([_samples('a', [1], [1])], critical_difference='x')


# ---------------------------------------------------------------- explanations

@pytest.mark.parametrize('p_value, text', [
    (None, '-'), (1.0, '1'), (0.41234, '0.412'), (0.0021, '0.0021'), (0.001, '0.001'), (0.000999, '<0.001'),
    (0.0, '<0.001'),
])
def test_p_values_are_rounded_for_reading(p_value, text):
    assert format_p(p_value) == text


def test_every_metric_explains_itself():
    base = [100 + (i % 11) for i in range(80)]
    res = judge([
        _samples('up38', base, [b * 1.38 for b in base]),
        _samples('up10', base, [b * 1.1 for b in base]),
        _samples('same', base, list(base)),
        _samples('few', base, base[:5]),
        _ratio('err', 5, 1000, 31, 1000),
    ])
    m = res['metrics']
    assert m['up38']['rule'].startswith('significant increase p<0.001 < 0.02 and +38% > tolerance +25%')
    assert m['up38']['effect_text'] == 'median 1.38x (+38%)' and m['up38']['effect'] == pytest.approx(1.38)
    assert m['up10']['rule'].startswith('significant but median +10% within tolerance +/-25%')
    assert m['same']['rule'] == 'no significant difference: p=1 >= 0.02' and m['same']['p_text'] == '1'
    assert m['few']['rule'] == 'nodata: 5 canary values < min_samples 20'
    assert m['few']['p_text'] == '-' and m['few']['effect'] is None
    err = m['err']
    assert err['rule'] == 'significant increase p<0.001 < 0.02 and rate 3.1% > allowed 1.62%'
    assert err['effect'] == pytest.approx(0.026) and err['effect_text'] == 'rate +2.6 points (3.1% vs 0.5%)'
    assert err['p_value'] == pytest.approx(
        scipy_stats.chi2_contingency([[31, 969], [5, 995]], correction=False)[1], rel=1e-9)
    assert err['thresholds'] == {'alpha': pytest.approx(0.02), 'tolerance': 0.25, 'min_samples': 20,
                                 'critical_difference': 0.05, 'max_absolute': 0.01,
                                 'allowed_low': pytest.approx(0.005 * 0.75 - 0.01),
                                 'allowed_high': pytest.approx(0.005 * 1.25 + 0.01)}
    for name, metric in m.items():
        assert metric['baseline_count'] and metric['canary_count'], name
        assert metric['rule'] in metric['reason']
    assert res['thresholds']['confidence'] == 0.98 and res['thresholds']['critical_ratio'] == 2.0


def test_a_decrease_allowed_by_direction_says_so():
    m = judge([_samples('lat', BASE, LOW)])['metrics']['lat']
    assert m['classification'] == 'low' and not m['failed'] and not m['critical_breach']
    assert m['rule'].endswith('; allowed by direction increase')
