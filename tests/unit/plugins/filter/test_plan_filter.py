# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout_plan filter plugin: wrapper, error type, and real Ansible templating."""
from __future__ import annotations

import os
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.filter.rollout_plan import FilterModule

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import run_adhoc  # noqa: E402

rollout_plan = FilterModule().filters()['rollout_plan']
H8 = ['h%d' % i for i in range(1, 9)]


def test_filter_is_registered_and_plans():
    assert rollout_plan(H8) == [['h1'], ['h2'], ['h3', 'h4'], ['h5', 'h6', 'h7', 'h8']]
    assert rollout_plan(H8, [1, '25%', '50%', '100%'], 2) == \
        [['h1'], ['h2'], ['h3', 'h4'], ['h5', 'h6'], ['h7', 'h8']]


@pytest.mark.parametrize('kwargs, needle', [
    (dict(steps=[2, 1]), 'steps[1] 1'),
    (dict(max_unavailable='0%'), "'0%'"),
    (dict(done=['nope']), "'nope'"),
    (dict(zones={'h1': 'a'}), "'h2'"),
    (dict(zone_mode='random', zones={h: 'a' for h in H8}), "'random'"),
])
def test_errors_are_ansible_filter_errors_naming_the_value(kwargs, needle):
    with pytest.raises(AnsibleFilterError) as info:
        rollout_plan(H8, **kwargs)
    assert needle in str(info.value)
    assert 'rollout_plan' in str(info.value)


def test_duplicate_host_is_filter_error():
    with pytest.raises(AnsibleFilterError, match="'h1'"):
        rollout_plan(['h1', 'h2', 'h1'])


@pytest.mark.slow
def test_through_real_ansible_templating():
    ok, result, raw = run_adhoc('ansible.builtin.debug', {
        'msg': "{{ ['a1', 'a2', 'b1', 'b2', 'c1'] | grayrelease.canary.rollout_plan("
               "steps=[1, '60%', '100%'], max_unavailable=2, "
               "zones={'a1': 'a', 'a2': 'a', 'b1': 'b', 'b2': 'b', 'c1': 'c'}, zone_mode='sequential') }}"})
    assert ok, raw
    assert result['msg'] == [['a1'], ['a2'], ['b1'], ['b2'], ['c1']]


@pytest.mark.slow
def test_error_through_real_ansible_names_value():
    ok, result, raw = run_adhoc('ansible.builtin.debug', {
        'msg': "{{ ['a', 'b'] | grayrelease.canary.rollout_plan(steps=[1, true]) }}"})
    assert not ok
    assert 'steps[1] True' in raw and 'rollout_plan' in raw
