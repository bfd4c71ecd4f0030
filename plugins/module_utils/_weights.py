# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn "give these canary servers P% of the traffic" into HAProxy weights.

HAProxy splits traffic between the servers of a backend in proportion to
their weights, so the canary servers' share is

    share = sum(canary weights) / sum(all weights)

Giving the canary servers their P% by lowering only their weight fails in
the common case where every server has the default weight 1 (nothing below
1 but 0). So both groups are rescaled: stable server j gets round(b * w_j)
and canary server i gets round(a * w_i), w being the initial weights, with
the scale factors chosen so that the share is as close to P% as integer
weights 1..256 allow. Proportions inside each group are kept (up to rounding).

Search: for every possible largest stable weight M in 1..256 the stable
weights are fixed (b = M / max stable initial weight); the canary total that
gives exactly P% is then T = P / (100 - P) * sum(stable weights), and the
canary scale candidates around T / sum(canary initial weights) are tried.
The best candidate has (1) the smallest absolute share error, then (2) the
smallest distortion of the in-group proportions, then (3) the smallest total
weight (smaller numbers leave HAProxy's round robin a shorter cycle).
Cost: 256 * a few candidates * n servers; 1,000 servers take milliseconds.
"""

from __future__ import annotations

import math
import re

MAX_WEIGHT = 256
# A percentage as people write it: ASCII digits, an optional decimal part.
# float() alone also takes 'inf', 'nan', '1e999', '1_0' and other scripts'
# digits, which end in an OverflowError or a NaN weight far from the value
# that caused it.
DECIMAL_RE = re.compile(r'[0-9]+(?:\.[0-9]+)?\Z')
INTEGER_RE = re.compile(r'[0-9]+\Z')


class WeightsError(ValueError):
    pass


def _scaled(initial, names, scale):
    out = {}
    for name in names:
        w = initial[name]
        out[name] = min(MAX_WEIGHT, max(1, int(math.floor(w * scale + 0.5))))
    return out


def _distortion(initial, names, weights):
    """Sum of relative deviations from the initial in-group proportions."""
    if len(names) < 2:
        return 0.0
    it = float(sum(initial[n] for n in names))
    wt = float(sum(weights[n] for n in names))
    return sum(abs(weights[n] / wt - initial[n] / it) for n in names)


def parse_percent(value):
    """P (a finite float >= 0) from a number or a text "P" / "P%"; None for anything else.

    Shared with the "N%" weights of haproxy_server (_haproxy.resolve_weight),
    so both refuse the same values.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            return None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith('%'):
            text = text[:-1].rstrip()
        if not DECIMAL_RE.match(text):
            return None
        number = float(text)
    else:
        return None
    # A decimal of 400 digits is still one, but float() makes it infinite.
    return number if math.isfinite(number) and number >= 0 else None


def _initial_weight(name, value):
    """An int 0-256 from an int, an integral float or a text of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        weight = value
    elif isinstance(value, float) and value.is_integer():  # False for inf and nan too
        weight = int(value)
    elif isinstance(value, str) and INTEGER_RE.match(value.strip()):
        weight = int(value.strip())
    else:
        weight = -1
    if not 0 <= weight <= MAX_WEIGHT:
        raise WeightsError("initial weight of %s must be an integer 0-256, got %r" % (name, value))
    return weight


def canary_weights(initial, canary, percent):
    """Absolute weight per server so that ``canary`` servers get ``percent``% of traffic.

    ``initial``: dict server -> initial weight (0-256). Servers with initial
    weight 0 take no traffic in the configuration and keep 0.
    ``canary``: list of server names (a subset of ``initial``).
    ``percent``: 0 <= P <= 100 (P = 0 gives the canary servers weight 0,
    P = 100 gives the stable servers weight 0; both keep the other group at
    its initial weights).
    """
    if not isinstance(initial, dict) or not initial:
        raise WeightsError("initial weights must be a non-empty dict server -> weight, got %r" % (initial,))
    weights = {}
    for name, value in initial.items():
        weights[str(name)] = _initial_weight(name, value)
    if isinstance(canary, str) or not isinstance(canary, (list, tuple)) or not canary:
        raise WeightsError("canary must be a non-empty list of server names, got %r" % (canary,))
    canary = [str(c) for c in canary]
    unknown = [c for c in canary if c not in weights]
    if unknown:
        raise WeightsError("canary server(s) %s not among the servers with weights: %s"
                           % (", ".join(unknown), ", ".join(sorted(weights))))
    if len(set(canary)) != len(canary):
        raise WeightsError("canary lists a server twice: %r" % (canary,))
    p = parse_percent(percent)
    if p is None or p > 100:
        raise WeightsError("percent must be a number between 0 and 100 (or 'N%%'), got %r" % (percent,))
    percent = int(p) if p.is_integer() else p  # for the messages below, whatever form it came in

    live_canary = [c for c in canary if weights[c] > 0]
    live_stable = [s for s in weights if s not in canary and weights[s] > 0]
    result = dict((name, 0) for name in weights)
    if p == 0:
        result.update((s, weights[s]) for s in live_stable)
        return result
    if p == 100:
        result.update((c, weights[c]) for c in live_canary)
        return result
    if not live_canary:
        raise WeightsError("the canary servers %s all have initial weight 0: they cannot take %s%% of traffic"
                           % (", ".join(canary), percent))
    if not live_stable:
        raise WeightsError("no stable server with a weight above 0: the canary servers %s would take all "
                           "traffic, not %s%%" % (", ".join(canary), percent))

    target = p / 100.0
    canary_sum = float(sum(weights[c] for c in live_canary))
    stable_max = max(weights[s] for s in live_stable)
    canary_max = max(weights[c] for c in live_canary)
    best = None
    for m in range(1, MAX_WEIGHT + 1):
        stable = _scaled(weights, live_stable, float(m) / stable_max)
        s_total = sum(stable.values())
        ideal = target / (1.0 - target) * s_total / canary_sum
        candidates = set()
        for base in (math.floor(ideal * canary_max), math.ceil(ideal * canary_max)):
            for k in (base - 1, base, base + 1):
                if 1 <= k <= MAX_WEIGHT:
                    candidates.add(float(k) / canary_max)
        candidates.add(ideal)
        for scale in candidates:
            can = _scaled(weights, live_canary, scale)
            c_total = sum(can.values())
            err = abs(float(c_total) / (c_total + s_total) - target)
            key = (round(err, 12),
                   round(_distortion(weights, live_stable, stable) + _distortion(weights, live_canary, can), 9),
                   c_total + s_total)
            if best is None or key < best[0]:
                best = (key, stable, can)
    result.update(best[1])
    result.update(best[2])
    return result


def share(weights, canary):
    """The canary servers' share (0-100) that ``weights`` gives them."""
    total = sum(weights.values())
    if not total:
        return 0.0
    return 100.0 * sum(weights[c] for c in canary) / total
