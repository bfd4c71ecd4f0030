# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""canary_weights: the arithmetic, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.grayrelease.canary.plugins.filter.canary_weights import FilterModule
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import canary_weights, share

FILTER = FilterModule().filters()["canary_weights"]


def fleet(n, w=1):
    return dict(("app%d" % i, w) for i in range(1, n + 1))


def test_all_weight_one_ten_percent_exact():
    w = FILTER(fleet(6), ["app1"], 10)
    assert share(w, ["app1"]) == pytest.approx(10.0)
    assert all(1 <= v <= 256 for v in w.values())
    assert len(set(w[s] for s in w if s != "app1")) == 1  # stable servers stay equal


def test_smallest_error_matches_brute_force_two_servers():
    # One canary, one stable: every pair (c, s) in 1..256 is a candidate.
    for p in (1, 3.3, 10, 12.5, 33.3, 50, 77, 99):
        w = canary_weights({"c": 1, "s": 1}, ["c"], p)
        best = min(abs(100.0 * c / (c + s) - p) for c, s in itertools.product(range(1, 257), repeat=2))
        assert abs(share(w, ["c"]) - p) <= best + 1e-9, p


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=256), min_size=2, max_size=12),
       st.integers(min_value=1, max_value=5), st.floats(min_value=1, max_value=99))
def test_properties(ws, k, p):
    initial = dict(("s%d" % i, w) for i, w in enumerate(ws))
    canary = list(initial)[:min(k, len(ws) - 1)]
    live_c = [c for c in canary if initial[c]]
    live_s = [s for s in initial if s not in canary and initial[s]]
    if not live_c or not live_s:
        with pytest.raises(ValueError):
            canary_weights(initial, canary, p)
        return
    w = canary_weights(initial, canary, p)
    assert set(w) == set(initial)
    for s, v in w.items():
        assert (v == 0) == (initial[s] == 0) and 0 <= v <= 256
    # the search includes the "scale everything by the same factor" family, so it is never worse than
    # the best single-canary-weight / single-stable-weight choice when weights are uniform
    if len(set(initial[s] for s in live_c)) == 1 and len(set(initial[s] for s in live_s)) == 1:
        nc, ns = len(live_c), len(live_s)
        best = min(abs(100.0 * nc * c / (nc * c + ns * s) - p) for c in range(1, 257) for s in range(1, 257))
        assert abs(share(w, canary) - p) <= best + 1e-9


def test_edges_and_errors():
    assert canary_weights({"a": 3, "b": 4, "z": 0}, ["a"], 0) == {"a": 0, "b": 4, "z": 0}
    assert canary_weights({"a": 3, "b": 4}, ["a"], "100%") == {"a": 3, "b": 0}
    for args, needle in [((fleet(3), ["app9"], 10), "app9"), ((fleet(3), "app1", 10), "app1"),
                         ((fleet(3), ["app1"], 101), "101"), (({"a": 300, "b": 1}, ["a"], 10), "300"),
                         (({"a": 1}, ["a"], 10), "stable"), (({}, ["a"], 10), "{}"),
                         (({"a": 0, "b": 1}, ["a"], 10), "weight 0"), ((fleet(3), ["app1"], "x"), "x")]:
        with pytest.raises(AnsibleFilterError) as err:
            FILTER(*args)
        assert needle in str(err.value)


def test_share_holds_on_a_big_fleet():
    # Its speed is measured by bench/bench_decisions.py (10,000 hosts), not by a timed unit test.
    w = canary_weights(fleet(1000), ["app1", "app2"], 5)
    assert share(w, ["app1", "app2"]) == pytest.approx(5.0, abs=0.05)
