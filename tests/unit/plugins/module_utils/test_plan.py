# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rollout_plan logic (plugins/module_utils/_plan.py): DESIGN.md rules and properties."""
from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.grayrelease.canary.plugins.module_utils._plan import PlanError, plan

H8 = ['h%d' % i for i in range(1, 9)]


# ---------------------------------------------------------------- DESIGN.md examples

def test_design_example_defaults():
    assert plan(H8) == [['h1'], ['h2'], ['h3', 'h4'], ['h5', 'h6', 'h7', 'h8']]


def test_design_example_max_unavailable_2():
    assert plan(H8, max_unavailable=2) == [['h1'], ['h2'], ['h3', 'h4'], ['h5', 'h6'], ['h7', 'h8']]


def test_greedy_split_7_by_3():
    hosts = ['h%d' % i for i in range(1, 8)]
    assert [len(b) for b in plan(hosts, steps=[7], max_unavailable=3)] == [3, 3, 1]


def test_empty_fleet():
    assert plan([]) == []
    assert plan([], steps=['50%', 3], max_unavailable='10%') == []


# ---------------------------------------------------------------- steps

def test_percent_is_ceil_of_fleet_share():
    hosts = ['h%d' % i for i in range(10)]
    # 33.3% of 10 = 3.33 -> 4; 12.5% of 10 = 1.25 -> 2
    assert [len(b) for b in plan(hosts, steps=['12.5%', '33.3%', '100%'])] == [2, 2, 6]


def test_percent_is_exact_not_float():
    hosts = ['h%d' % i for i in range(100)]
    # In floats 7 * 100 / 100 is fine but 0.07 * 100 is 7.000000000000001: must stay 7.
    for pct in (7, 14, 28, 29, 57, 58):
        assert len(plan(hosts, steps=['%d%%' % pct])[0]) == pct
    assert len(plan(hosts, steps=['0.5%'])[0]) == 1
    assert len(plan(hosts, steps=['.5%', '99.5%'])[1]) == 99


def test_ints_above_fleet_are_capped_and_equal_targets_collapse():
    hosts = ['a', 'b', 'c', 'd']
    assert plan(hosts, steps=[1, 50]) == [['a'], ['b', 'c', 'd']]
    assert plan(hosts, steps=[1, 10, 50]) == [['a'], ['b', 'c', 'd']]
    # 25% of 8 is 2: the same target as the int 2, so one step.
    assert plan(H8, steps=[2, '25%', 8]) == [['h1', 'h2'], ['h3', 'h4', 'h5', 'h6', 'h7', 'h8']]


def test_canary_only_run_stops_at_last_target():
    assert plan(H8, steps=[2]) == [['h1', 'h2']]
    assert plan(H8, steps=[1, '50%']) == [['h1'], ['h2', 'h3', 'h4']]


def test_decreasing_targets_error_names_step():
    with pytest.raises(PlanError, match=r"steps\[1\] 2"):
        plan(H8, steps=[3, 2])
    with pytest.raises(PlanError, match=r"'25%'"):
        plan(H8, steps=['50%', '25%'])


@pytest.mark.parametrize('bad', [0, -1, True, False, 1.5, '0%', '101%', '-5%', 'abc', '50', '%', None, {'a': 1}, [2]])
def test_bad_step_value_is_named(bad):
    with pytest.raises(PlanError) as info:
        plan(H8, steps=[1, bad])
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize('bad', [[], None, '25%', 3, ()])
def test_steps_must_be_non_empty_list(bad):
    with pytest.raises(PlanError, match='steps'):
        plan(H8, steps=bad)


# ---------------------------------------------------------------- max_unavailable

def test_max_unavailable_percent_floor_and_min_one():
    # 25% of 8 = 2; 10% of 8 = 0.8 -> floor 0 -> at least 1.
    assert max(len(b) for b in plan(H8, max_unavailable='25%')) == 2
    assert max(len(b) for b in plan(H8, max_unavailable='10%')) == 1
    assert max(len(b) for b in plan(H8, max_unavailable='37.5%')) == 3


@pytest.mark.parametrize('bad', [0, -2, True, 2.5, '0%', '150%', 'two', [2]])
def test_bad_max_unavailable_is_named(bad):
    with pytest.raises(PlanError) as info:
        plan(H8, max_unavailable=bad)
    assert 'max_unavailable' in str(info.value) and repr(bad) in str(info.value)


# ---------------------------------------------------------------- hosts and done

@pytest.mark.parametrize('hosts, needle', [
    (['a', 'b', 'a'], "'a'"),
    (['a', 7], '7'),
    (['a', ''], "''"),
    ('a,b', "'a,b'"),
    (None, 'None'),
])
def test_bad_hosts_are_named(hosts, needle):
    with pytest.raises(PlanError) as info:
        plan(hosts)
    assert needle in str(info.value)


def test_done_counts_first_and_skips_reached_steps():
    assert plan(H8, done=['h1', 'h2']) == [['h3', 'h4'], ['h5', 'h6', 'h7', 'h8']]
    assert plan(H8, done=['h1']) == [['h2'], ['h3', 'h4'], ['h5', 'h6', 'h7', 'h8']]
    # Done hosts need not be the first ones: progress counts them first anyway.
    assert plan(H8, done=['h5']) == [['h1'], ['h2', 'h3'], ['h4', 'h6', 'h7', 'h8']]
    assert plan(H8, done=H8) == []
    assert plan(H8, steps=[1], done=['h3', 'h4']) == []


def test_done_unknown_host_is_error():
    with pytest.raises(PlanError, match="'h9'"):
        plan(H8, done=['h1', 'h9'])
    with pytest.raises(PlanError, match='done'):
        plan(H8, done='h1')


def test_done_duplicates_are_harmless():
    assert plan(H8, done=['h1', 'h1']) == plan(H8, done=['h1'])


# ---------------------------------------------------------------- zones

ZONED = ['a1', 'a2', 'a3', 'b1', 'b2', 'c1']
ZONES = {h: h[0] for h in ZONED}


def test_spread_round_robin_over_zones_in_first_appearance_order():
    flat = [h for b in plan(ZONED, steps=['100%'], zones=ZONES) for h in b]
    assert flat == ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']
    hosts = ['b1', 'a1', 'b2', 'a2']
    flat = [h for b in plan(hosts, steps=[4], zones={h: h[0] for h in hosts}) for h in b]
    assert flat == ['b1', 'a1', 'b2', 'a2']


def test_spread_batches_take_every_zone():
    assert plan(ZONED, steps=[3, 6], zones=ZONES) == [['a1', 'b1', 'c1'], ['a2', 'b2', 'a3']]


def test_sequential_splits_at_zone_boundary_then_by_max_unavailable():
    assert plan(ZONED, steps=[1, '50%', '100%'], zones=ZONES, zone_mode='sequential') == \
        [['a1'], ['a2', 'a3'], ['b1', 'b2'], ['c1']]
    assert plan(ZONED, steps=[6], zones=ZONES, zone_mode='sequential', max_unavailable=2) == \
        [['a1', 'a2'], ['a3'], ['b1', 'b2'], ['c1']]


def test_zones_with_done_keep_zone_order():
    assert plan(ZONED, steps=[6], zones=ZONES, zone_mode='sequential', done=['a1', 'a2', 'a3']) == \
        [['b1', 'b2'], ['c1']]
    assert plan(ZONED, steps=[6], zones=ZONES, done=['b1']) == [['a1', 'b2', 'c1', 'a2', 'a3']]


def test_zone_missing_for_host_is_error():
    zones = dict(ZONES)
    del zones['b2']
    with pytest.raises(PlanError, match="'b2'"):
        plan(ZONED, zones=zones)


@pytest.mark.parametrize('zones, needle', [(['a'], "['a']"), ('a', "'a'")])
def test_zones_must_be_a_dict(zones, needle):
    with pytest.raises(PlanError, match='zones') as info:
        plan(ZONED, zones=zones)
    assert needle in str(info.value)


def test_bad_zone_name_and_mode():
    with pytest.raises(PlanError, match='None'):
        plan(['x'], zones={'x': None})
    with pytest.raises(PlanError, match="'zigzag'"):
        plan(ZONED, zones=ZONES, zone_mode='zigzag')


def test_extra_zone_entries_are_ignored():
    zones = dict(ZONES, other='z')
    assert plan(ZONED, zones=zones) == plan(ZONED, zones=ZONES)


# ---------------------------------------------------------------- properties

def _resolve(step, n):
    if isinstance(step, int):
        return min(step, n)
    return int(math.ceil(Decimal(step[:-1]) * n / 100))


@st.composite
def plan_inputs(draw):
    n = draw(st.integers(min_value=0, max_value=60))
    hosts = ['host-%03d' % i for i in draw(st.permutations(range(n)))]
    nzones = draw(st.integers(min_value=1, max_value=5))
    zones = {h: 'zone-%d' % draw(st.integers(0, nzones - 1)) for h in hosts}
    raw = draw(st.lists(st.one_of(
        st.integers(min_value=1, max_value=70),
        st.builds(lambda p, d: '%d.%d%%' % (p, d) if p < 100 else '100%',
                  st.integers(0, 100), st.integers(0, 9)).filter(lambda s: s not in ('0.0%',)),
    ), min_size=1, max_size=6))
    steps = sorted(raw, key=lambda s: _resolve(s, n))
    max_unavailable = draw(st.one_of(st.none(), st.integers(1, 20),
                                     st.integers(1, 100).map(lambda p: '%d%%' % p)))
    done = [h for h in hosts if draw(st.booleans()) and draw(st.booleans())]
    use_zones = draw(st.booleans())
    mode = draw(st.sampled_from(['spread', 'sequential']))
    return hosts, steps, max_unavailable, zones if use_zones else None, mode, done


@settings(max_examples=400, deadline=None)
@given(plan_inputs())
def test_plan_properties(args):
    hosts, steps, max_unavailable, zones, mode, done = args
    n = len(hosts)
    batches = plan(hosts, steps=steps, max_unavailable=max_unavailable, zones=zones, zone_mode=mode, done=done)
    assert batches == plan(hosts, steps=steps, max_unavailable=max_unavailable, zones=zones,
                           zone_mode=mode, done=done), 'not deterministic'
    targets = [_resolve(s, n) for s in steps]
    last = targets[-1] if n else 0
    flat = [h for b in batches for h in b]

    # Each pending host at most once, never a done host; exactly the hosts to reach the last target.
    assert len(flat) == len(set(flat))
    assert not set(flat) & set(done)
    assert len(flat) == max(0, last - len(done))
    if last == n:
        assert set(flat) | set(done) == set(hosts)

    # No empty batch, none above max_unavailable.
    assert all(batches)
    if max_unavailable is not None:
        limit = max_unavailable if isinstance(max_unavailable, int) else max(1, n * int(max_unavailable[:-1]) // 100)
        assert all(len(b) <= limit for b in batches)

    # Progress: every target beyond the done count is reached exactly at a batch boundary.
    boundaries = set()
    progress = len(done)
    for b in batches:
        progress += len(b)
        boundaries.add(progress)
    for t in targets:
        if t > len(done):
            assert t in boundaries

    if zones is None:
        pending = [h for h in hosts if h not in set(done)]
        assert flat == pending[:len(flat)]
    elif mode == 'sequential':
        for b in batches:
            assert len({zones[h] for h in b}) == 1
        # Zone by zone: once a zone is left it never comes back.
        order = [zones[h] for h in flat]
        runs = [z for i, z in enumerate(order) if i == 0 or order[i - 1] != z]
        assert len(runs) == len(set(runs))
    else:
        remaining = {}
        for h in hosts:
            if h not in set(done):
                remaining[zones[h]] = remaining.get(zones[h], 0) + 1
        for b in batches:
            counts = {}
            for h in b:
                counts[zones[h]] = counts.get(zones[h], 0) + 1
            top = max(counts.values())
            # Round-robin: a zone with hosts left is at most one behind the busiest zone.
            for zone, left in remaining.items():
                if left:
                    assert counts.get(zone, 0) >= min(left, top - 1), (b, remaining)
            for zone, c in counts.items():
                remaining[zone] -= c
