# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sequential judgement of a rollout: the confidence each step is judged with.

Private to grayrelease.canary. Stdlib only, like the judge.

A rollout judges every step that leaves hosts behind (look k of K planned
looks: step k's new hosts against the hosts not yet switched). Judging each
look at the calibrated single-look confidence would give a good release K
chances of a false alarm instead of one. This module splits the single-look
alpha (1 - confidence) over the K looks, so that the family-wise alpha of
the whole rollout stays at most 1 - confidence:

    look_confidence(confidence, look, looks, scheme='bonferroni')

is the confidence to judge look `look` (1-based) of `looks` with.

Why alpha spending, and why the plain one by default
----------------------------------------------------

The looks of a rollout are not the looks of a classical group-sequential
trial. There, look k re-tests one hypothesis on all the data so far, the
statistics of successive looks are correlated, and a Lan-DeMets boundary
lets look k use more than the alpha it spends. Here each look judges other
hosts over a fresh window: its data are new, not cumulative. So the alpha a
look spends is exactly the level to judge it at, and the Bonferroni
inequality P(any false alarm) <= sum of the spent alphas bounds the
family-wise rate whatever the dependence between looks (they share baseline
hosts). No boundary needs to be solved, and any spending function is
valid; it only decides which look gets how much of the alpha:

* `bonferroni` (default): every look gets alpha / K. Equal information per
  look (the same window each time) and no reason to favour one look, and
  the simplest rule to read in a report ("0.995 split over 3 looks").
* `pocock`: Lan-DeMets' Pocock-type spending, alpha * ln(1 + (e - 1) t) at
  information fraction t = k / K. Front-loaded (K = 3: 45%, 31%, 24% of
  alpha): a little more power for the first look, where a bad release
  touches the least traffic, a little less for the last.
* `obrien-fleming`: Lan-DeMets' O'Brien-Fleming-type spending,
  2 - 2 * Phi(z_{1 - alpha / 2} / sqrt(t)). Back-loaded: it saves alpha for
  the end because, in a trial, early looks have little data. A rollout's
  first look has as much data as any other and is the cheapest place to
  stop, so this scheme (K = 3: the first look gets ~0.02% of alpha, only
  a p-value below 1.2e-6 counts there) is here for comparison
  (bench/calibrate.py), not as advice.

Measured (make bench-calibrate, bench/results/calibration.txt; K = 3,
2% errors): Pocock catches a release bad from the start at look 1 a few
points more often than Bonferroni and one bad from step 3 on at look 3 a
few points less often; both need the same window (60 s at 40 req/s) to
catch the latter 95% of the time. The judge's error counts are small
integers, so a per-look alpha moves the smallest flagged count only at a
few thresholds and the split matters less than the window. Bonferroni wins
on simplicity.

An always-valid test (a mixture SPRT, anytime p-values) would let the
engine peek continuously, but needs other test statistics than the judge's
Mann-Whitney and two-proportion tests (checked against scipy) and the
rollout only ever looks at K planned moments: spending over K looks is
enough and keeps the judge as it is.

Number the looks on the rollout's plan (a resumed run keeps the numbers of
the looks it has left), so a rerun does not spend the alpha afresh.
"""

from __future__ import annotations

import math
from statistics import NormalDist

SCHEMES = ('bonferroni', 'pocock', 'obrien-fleming')
DEFAULT_SCHEME = 'bonferroni'
# The largest float below 1: the judge needs a confidence < 1, and a look
# given less alpha than 2**-53 (O'Brien-Fleming's first looks of a long
# plan) is judged at that alpha instead, which no p-value of the judge
# reaches in practice.
LARGEST_CONFIDENCE = 1.0 - 2.0 ** -53

_NORMAL = NormalDist()


class SequentialError(ValueError):
    """Invalid input; the message names the offending value."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check(confidence, looks, scheme, look=None):
    if (isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence)
            or not 0 < confidence < 1):
        raise SequentialError('confidence %r must be a number between 0 and 1 (exclusive)' % (confidence,))
    if not _is_int(looks) or looks < 1:
        raise SequentialError('looks %r must be an integer >= 1 (the judged steps of the plan)' % (looks,))
    if look is not None and (not _is_int(look) or not 1 <= look <= looks):
        raise SequentialError('look %r must be an integer from 1 to looks (%r)' % (look, looks))
    if scheme not in SCHEMES:
        raise SequentialError('scheme %r is not one of %s' % (scheme, ', '.join(SCHEMES)))


def _spent(alpha, fraction, scheme):
    """Cumulative alpha spent at information fraction 0 < fraction <= 1."""
    if fraction >= 1:
        # Every scheme spends exactly alpha by the end; not computed, so
        # rounding cannot push the total above it.
        return alpha
    if scheme == 'bonferroni':
        return alpha * fraction
    if scheme == 'pocock':
        return alpha * math.log1p((math.e - 1.0) * fraction)
    # From the tails (inv_cdf of alpha / 2, erfc), not 1 - alpha / 2 and
    # 1 - cdf: those lose the digits of the tiny alphas of early looks.
    z = -_NORMAL.inv_cdf(alpha / 2.0)
    return math.erfc(z / math.sqrt(2.0 * fraction))


def spending(confidence, looks, scheme=DEFAULT_SCHEME):
    """The alpha each of `looks` looks may spend, in order; they sum to 1 - confidence."""
    _check(confidence, looks, scheme)
    alpha = 1.0 - confidence
    cumulative = [_spent(alpha, k / float(looks), scheme) for k in range(1, looks + 1)]
    # max(): the schemes are increasing, this only guards against a rounding dip.
    return [max(0.0, now - before) for before, now in zip([0.0] + cumulative[:-1], cumulative)]


def look_alpha(confidence, look, looks, scheme=DEFAULT_SCHEME):
    """The alpha of look `look` (1-based) of `looks`."""
    _check(confidence, looks, scheme, look)
    return spending(confidence, looks, scheme)[look - 1]


def look_confidence(confidence, look, looks, scheme=DEFAULT_SCHEME):
    """The confidence to judge look `look` (1-based) of `looks` with.

    confidence: the single-look confidence (canary_confidence); looks: the
    steps of the plan that are judged. Over all looks the family-wise alpha
    is at most 1 - confidence. One look (looks=1) keeps `confidence`.
    """
    alpha = look_alpha(confidence, look, looks, scheme)
    if looks == 1:
        # Exactly the single-look confidence, not 1 - (1 - confidence) an ulp off.
        return float(confidence)
    return min(1.0 - alpha, LARGEST_CONFIDENCE)
