# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Weights and percentages nobody meant (issue 19, item 11): the canary_weights
filter and haproxy_server's weight / weights ("N%" of the initial weight) refuse
them with an error that names the value, never a traceback (OverflowError from
int(inf), ValueError from int(nan)) and never a quietly accepted weight."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.filter.canary_weights import FilterModule
from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import HAProxyError
from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import resolve_weight

FILTER = FilterModule().filters()["canary_weights"]
FLEET = {"app1": 1, "app2": 1, "app3": 1}
HUGE = 10 ** 400  # an int no float holds

# Percentages float() takes (or overflows on) that are no plain decimal between 0 and 100.
BAD_PERCENTS = ["inf%", "nan%", "-inf%", "Infinity%", "1e999%", "1e999", "inf", "nan", float("inf"), float("nan"),
                HUGE, "9" * 400, "-5%", "-5", "%", "", "12.5.1%", "10%%", "1_0%", "\u0663%", "1e1%", "0x10%", None,
                [10]]


@pytest.mark.parametrize("percent", BAD_PERCENTS, ids=repr)
def test_the_filter_refuses_a_percent_and_names_it_as_given(percent):
    with pytest.raises(AnsibleFilterError) as err:
        FILTER(FLEET, ["app1"], percent)
    assert "percent must be a number between 0 and 100" in str(err.value)
    assert repr(percent) in str(err.value)


@pytest.mark.parametrize("weight", [float("inf"), float("nan"), HUGE, "1e999", "inf", "\u0663", "7.5", 7.5, -1, "-1",
                                    257, True, None], ids=repr)
def test_the_filter_refuses_an_initial_weight_and_names_it(weight):
    with pytest.raises(AnsibleFilterError) as err:
        FILTER(dict(FLEET, app2=weight), ["app1"], 10)
    assert "initial weight of app2 must be an integer 0-256, got %r" % (weight,) in str(err.value)


@pytest.mark.parametrize("percent, initial, expected", [
    (" 12.5 % ", {"a": 1, "b": 1}, {"a": 1, "b": 7}),  # spaces around, as a survey may leave them
    ("50", {"a": "3", "b": 3.0}, {"a": 1, "b": 1}),  # weights as text or integral floats
    (100.0, {"a": 2, "b": 5}, {"a": 2, "b": 0}),
])
def test_plain_numbers_in_any_form_still_work(percent, initial, expected):
    assert FILTER(initial, ["a"], percent) == expected


@pytest.mark.parametrize("spec, initial", [
    ("inf%", 4), ("inf%", 0),  # 0 * inf is NaN
    ("nan%", 4), ("-inf%", 4), ("1e999%", 4), ("9" * 400 + "%", 4), ("-5%", 4), ("%", 4), ("12.5.1%", 4),
    ("10%%", 4), ("1_0%", 4), ("1e1%", 4), ("1_0", 4), ("\u0663", 4), ("1e999", 4), ("-1", 4), (float("inf"), 4),
    (float("nan"), 4), (HUGE, 4), (257, 4), ("300%", 100),
    ("1" + "0" * 308 + "%", 256),  # finite, but initial * N overflows to infinity
])
def test_resolve_weight_refuses_with_a_message_naming_the_weight(spec, initial):
    with pytest.raises(HAProxyError) as err:
        resolve_weight(spec, initial, "app1")
    assert err.value.kind == "bad_weight"
    assert "weight %r for server app1" % (spec,) in err.value.msg


@pytest.mark.parametrize("spec, initial, expected", [(" 50 %", 4, 2), ("12.5%", 8, 1), ("0%", 0, 0),
                                                     ("25600%", 1, 256), ("256", 9, 256), (0, 9, 0)])
def test_resolve_weight_still_takes_plain_weights_and_percentages(spec, initial, expected):
    assert resolve_weight(spec, initial, "app1") == expected
