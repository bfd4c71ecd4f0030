# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alpha spending over a rollout's looks (plugins/module_utils/_sequential.py)."""
from __future__ import annotations

import math
import random

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import judge, mann_whitney_p
from ansible_collections.grayrelease.canary.plugins.module_utils._sequential import (
    DEFAULT_SCHEME,
    LARGEST_CONFIDENCE,
    SCHEMES,
    SequentialError,
    look_alpha,
    look_confidence,
    spending,
)

scipy_stats = pytest.importorskip('scipy.stats')

LOOKS = (1, 2, 3, 5, 10, 40)


@pytest.mark.parametrize('scheme', SCHEMES)
@pytest.mark.parametrize('looks', LOOKS)
@pytest.mark.parametrize('confidence', (0.5, 0.98, 0.995, 0.9999))
def test_spent_alphas_sum_to_the_single_look_alpha(scheme, looks, confidence):
    alphas = spending(confidence, looks, scheme)
    assert len(alphas) == looks
    assert all(a >= 0 for a in alphas)
    # At most the total (the guarantee), and no alpha left unspent (the power).
    assert sum(alphas) <= (1 - confidence) * (1 + 1e-12)
    assert sum(alphas) == pytest.approx(1 - confidence, rel=1e-9)
    # What the engine gets back adds up the same way, up to the rounding of 1 - (1 - alpha).
    confidences = [look_confidence(confidence, k, looks, scheme) for k in range(1, looks + 1)]
    assert sum(1 - c for c in confidences) <= (1 - confidence) + looks * 2.0 ** -52


@pytest.mark.parametrize('scheme', SCHEMES)
@pytest.mark.parametrize('looks', LOOKS)
def test_every_look_is_at_least_as_strict_as_a_single_look(scheme, looks):
    for look in range(1, looks + 1):
        confidence = look_confidence(0.995, look, looks, scheme)
        assert 0.995 <= confidence < 1
        assert confidence == pytest.approx(1 - look_alpha(0.995, look, looks, scheme), abs=2.0 ** -52)


@pytest.mark.parametrize('scheme', SCHEMES)
def test_one_look_keeps_the_single_look_confidence_exactly(scheme):
    for confidence in (0.9, 0.98, 0.995, 0.99733):
        assert look_confidence(confidence, 1, 1, scheme) == confidence


def test_bonferroni_splits_equally_and_more_looks_are_stricter():
    assert spending(0.99, 4, 'bonferroni') == pytest.approx([0.0025] * 4, rel=1e-12)
    assert look_confidence(0.995, 2, 3) == pytest.approx(1 - 0.005 / 3, abs=1e-15)
    stricter = [look_confidence(0.995, 1, looks, 'bonferroni') for looks in LOOKS]
    assert stricter == sorted(stricter) and len(set(stricter)) == len(LOOKS)
    assert DEFAULT_SCHEME == 'bonferroni'


def test_pocock_front_loads_and_obrien_fleming_back_loads():
    for looks in (2, 3, 5, 10):
        pocock = spending(0.995, looks, 'pocock')
        fleming = spending(0.995, looks, 'obrien-fleming')
        assert pocock == sorted(pocock, reverse=True)
        assert fleming == sorted(fleming)
        assert pocock[0] > 0.005 / looks > fleming[0]


def test_pocock_spending_matches_lan_demets_tables():
    # Lan & DeMets' Pocock-type function at t = 1/2 spends ln(1 + (e - 1) / 2) = 0.6201 of alpha
    # (gsDesign's sfLDPocock gives the same); at K = 3 the first look gets ln(1 + (e - 1) / 3) = 0.4528 of it.
    assert spending(0.95, 2, 'pocock')[0] / 0.05 == pytest.approx(0.62011, abs=1e-5)
    assert spending(0.995, 3, 'pocock')[0] / 0.005 == pytest.approx(0.45283, abs=1e-5)


@pytest.mark.parametrize('confidence', (0.95, 0.995, 0.9999))
@pytest.mark.parametrize('looks', (2, 3, 7))
def test_obrien_fleming_spending_matches_scipy_normal(confidence, looks):
    alpha = 1 - confidence
    z = scipy_stats.norm.isf(alpha / 2)
    cumulative = [2 * scipy_stats.norm.sf(z / math.sqrt(k / looks)) for k in range(1, looks + 1)]
    expected = [now - before for before, now in zip([0.0] + cumulative[:-1], cumulative)]
    assert spending(confidence, looks, 'obrien-fleming') == pytest.approx(expected, rel=1e-7, abs=1e-18)


def test_a_vanishing_look_alpha_still_gives_the_judge_a_valid_confidence():
    # O'Brien-Fleming's first look of 40 at alpha 0.005 spends ~1e-70: below what 1 - alpha can hold.
    assert look_alpha(0.995, 1, 40, 'obrien-fleming') < 2.0 ** -53
    confidence = look_confidence(0.995, 1, 40, 'obrien-fleming')
    assert confidence == LARGEST_CONFIDENCE < 1
    metric = {'name': 'e', 'kind': 'ratio', 'baseline': {'errors': 0, 'total': 1000},
              'canary': {'errors': 5, 'total': 100}}
    # Judgeable, and nothing short of a p-value below 1e-16 fails at it: 5 errors in 100 against
    # none in 1000 (p ~ 1e-12) do not, but fail the last look.
    assert judge([metric], confidence=confidence, critical_difference=0)['verdict'] == 'pass'
    assert judge([metric], confidence=look_confidence(0.995, 40, 40, 'obrien-fleming'))['verdict'] == 'fail'


def test_simulated_family_wise_error_stays_within_the_single_look_alpha():
    """A/A rollouts of 3 looks, each look a Mann-Whitney test of fresh canary
    and baseline samples; a rollout is a false alarm when any look rejects.
    alpha 0.1 so 3000 rollouts measure it to about +/- 0.017 (3 sigma)."""
    rng = random.Random(20261206)
    confidence, looks, rollouts = 0.9, 3, 3000
    p_values = [[mann_whitney_p([rng.gauss(0, 1) for dummy in range(20)], [rng.gauss(0, 1) for dummy in range(60)])
                 for dummy in range(looks)] for dummy in range(rollouts)]

    def family_wise(levels):
        return sum(any(p < a for p, a in zip(row, levels)) for row in p_values) / float(rollouts)

    margin = 3 * math.sqrt(0.1 * 0.9 / rollouts)
    for scheme in SCHEMES:
        assert family_wise(spending(confidence, looks, scheme)) <= 0.1 + margin, scheme
    # Without spending, three looks at the single-look alpha alarm about 1 - 0.9 ** 3 = 27% of the time.
    assert family_wise([0.1] * looks) == pytest.approx(1 - 0.9 ** 3, abs=0.035)


@pytest.mark.parametrize('args, named', [
    ((0, 1, 3), 'confidence 0 '),
    ((1, 1, 3), 'confidence 1 '),
    ((1.5, 1, 3), 'confidence 1.5 '),
    ((float('nan'), 1, 3), 'confidence nan '),
    ((True, 1, 3), 'confidence True '),
    (('0.99', 1, 3), "confidence '0.99' "),
    ((0.99, 0, 3), 'look 0 '),
    ((0.99, 4, 3), 'look 4 must be an integer from 1 to looks (3)'),
    ((0.99, 1.0, 3), 'look 1.0 '),
    ((0.99, 1, 0), 'looks 0 '),
    ((0.99, 1, 2.0), 'looks 2.0 '),
    ((0.99, 1, True), 'looks True '),
])
def test_bad_arguments_are_named(args, named):
    with pytest.raises(SequentialError) as info:
        look_confidence(*args)
    assert named in str(info.value)


def test_unknown_scheme_is_named_with_the_known_ones():
    with pytest.raises(SequentialError, match="scheme 'pocok' is not one of bonferroni, pocock, obrien-fleming"):
        look_confidence(0.995, 1, 3, scheme='pocok')
    with pytest.raises(SequentialError, match='looks -1 '):
        spending(0.995, -1)
