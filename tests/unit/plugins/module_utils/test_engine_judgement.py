# -*- coding: utf-8 -*-
"""The engine's judge settings, sample-size plan and verdict report, on test_engine's simulated fleet."""
from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engine import APPS, FakeFleet, run, settings  # noqa: E402


class RatedFleet(FakeFleet):
    """HAProxy reports `rate` requests/s per server on each balancer; the canary may be slow."""

    def __init__(self, rate=0, canary_latency=None, **kw):
        super(RatedFleet, self).__init__(**kw)
        self.rate = rate
        self.canary_latency = canary_latency

    def info(self, after=False, canary=None):
        result = super(RatedFleet, self).info(after, canary)
        for row in result['backends']['demoapp'].values():
            row['rate'] = self.rate
        return result

    def samples(self, act, state):
        result = super(RatedFleet, self).samples(act, state)
        if self.canary_latency:
            canary_urls = ['http://%s/' % h for h in engine.canary_hosts(state)]
            for rnd in result['results']:
                for url in canary_urls:
                    rnd['samples'][url]['latencies_ms'] = [self.canary_latency + i % 3 for i in range(20)]
        return result


@pytest.mark.parametrize('over, needle', [
    (dict(canary_critical_ratio=1), 'canary_critical_ratio=1 must be 0 (off) or a median ratio above 1'),
    (dict(canary_confidence=1), 'canary_confidence=1 must be <= 0.9999'),
    (dict(canary_confidence='sure'), 'canary_confidence=sure must be a number'),
    (dict(canary_critical_ratio='x'), 'canary_critical_ratio=x must be a number'),
    (dict(canary_critical_difference=2), 'canary_critical_difference=2 must be 0 (off)'),
    (dict(canary_min_power=0), 'canary_min_power=0 must be > 0'),
    (dict(canary_request_rate=-5), 'canary_request_rate=-5 must be >= 0'),
    (dict(canary_underpowered='maybe'), "canary_underpowered='maybe' must be 'warn' or 'fail'"),
])
def test_bad_judge_settings_are_named(over, needle):
    dummy, errors = settings(**over)
    assert any(needle in e for e in errors), errors


def test_judge_settings_accept_survey_strings():
    conf, errors = settings(canary_confidence='0.99', canary_critical_ratio='3', canary_critical_difference='0', canary_request_rate='120',
                            canary_min_power='0.9', canary_underpowered='fail')
    assert errors == [] and conf['confidence'] == 0.99
    assert (conf['critical_ratio'], conf['critical_difference'], conf['request_rate'], conf['min_power'],
            conf['underpowered']) == (3.0, 0.0, 120.0, 0.9, 'fail')
    conf, errors = settings()
    assert conf['confidence'] == 0.995
    assert (conf['critical_ratio'], conf['critical_difference'], conf['request_rate'], conf['min_power'],
            conf['underpowered']) == (2.0, 0.05, None, 0.8, 'warn')


def test_underpowered_analysis_refuses_naming_the_numbers_and_the_fix():
    # 6 servers x 2 balancers x 5 req/s = 60 req/s; 10% for 2 x 10 s = 120 canary requests.
    fleet = RatedFleet(rate=5)
    state = run(fleet, canary_underpowered='fail', canary_analysis_count=2)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    reason = state['halt']['reason']
    assert reason.startswith('nothing was changed: the canary analysis is underpowered (request rate from HAProxy')
    assert '60 req/s x 10% x 20 s window: ~120 canary requests (vs 1080 baseline)' in reason
    plan = state['sample_plan']
    assert 'raise canary_analysis_count=%d (a %d s window)' % (plan['needed_count'], 10 * plan['needed_count']) in reason
    assert 'canary_traffic_percent=%d' % plan['needed_traffic_percent'] in reason
    assert reason.endswith('(canary_underpowered=fail)')
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.staged == set()
    # The suggested window is enough: the same fleet then rolls out.
    state = run(RatedFleet(rate=5), canary_underpowered='fail', canary_analysis_count=plan['needed_count'])
    assert state['decision'] == 'promoted' and state['sample_plan']['ok']
    state = run(RatedFleet(rate=5), canary_underpowered='fail', canary_analysis_count=2,
                canary_traffic_percent=plan['needed_traffic_percent'])
    assert state['decision'] == 'promoted' and state['sample_plan']['ok']


def test_underpowered_analysis_warns_by_default_and_the_report_shows_the_plan():
    state = run(RatedFleet(rate=3))
    assert state['decision'] == 'promoted'
    assert any(n.startswith('the canary analysis is underpowered') for n in state['notes'])
    doc = engine.report(state, str)
    assert doc['sample_plan']['canary_requests'] == 36 and doc['settings']['underpowered'] == 'warn'
    text = engine.report_markdown(doc)
    assert '### Sample-size plan of the canary analysis' in text
    assert '| expected requests | 36 canary, 324 baseline |' in text
    assert '| underpowered | raise canary_analysis_count=' in text


def test_request_rate_variable_overrides_the_measurement_and_no_traffic_is_named():
    state = run(RatedFleet(rate=0), canary_request_rate=400)
    plan = state['sample_plan']
    assert plan['rate_source'] == 'canary_request_rate' and plan['canary_requests'] == 400 and plan['ok']
    assert not any('underpowered' in n for n in state['notes'])
    state = run(RatedFleet(rate=0))
    assert any('no traffic through demoapp at pre-flight' in n for n in state['notes'])


def test_no_plan_when_no_step_is_judged():
    state = run(RatedFleet(rate=3, apps=['app1']), canary_underpowered='fail')
    assert state['decision'] == 'promoted' and state['sample_plan'] is None


def test_a_canary_three_times_slower_fails_by_the_critical_threshold_and_the_report_says_why():
    state = run(RatedFleet(rate=50, canary_latency=14.0))
    judged = state['steps'][0]['judge']
    assert judged['verdict'] == 'fail' and judged['decided_by'] == 'critical_threshold'
    latency = judged['metrics']['probe_latency_ms']
    # Three judged steps share confidence 0.995: the canary's look is judged at alpha 0.005 / 3.
    assert latency['rule'] == 'critical: median 2.5x >= 2x and p<0.001 < 0.00167'
    assert state['decision'] == 'rolled_back' and 'critical: median 2.5x' in state['halt']['reason']
    text = engine.report_markdown(engine.report(state, str))
    assert 'decided by critical_threshold: critical threshold reached: probe_latency_ms' in text
    assert ('| probe_latency_ms | **FAILED (critical)** | 20 / 100 | 6 | 15 | median 2.5x (+150%) | <0.001 | '
            'tolerance 50%, critical 2x, min 20 | critical: median 2.5x >= 2x and p<0.001 < 0.00167 |') in text
    assert 'confidence 0.9983 (alpha 0.001667), pass_score 95, marginal_score 75, critical: median 2x, rate +5 points; ' \
        'look 1 of 3, sharing canary_confidence 0.995' in text
    # The global variable reaches the judge: off, the same canary is only marginal (and still rolled back).
    state = run(RatedFleet(rate=50, canary_latency=14.0), canary_critical_ratio=0)
    judged = state['steps'][0]['judge']
    assert judged['verdict'] == 'marginal' and judged['decided_by'] == 'score'
    assert state['decision'] == 'rolled_back'


class FewRequestsFleet(FakeFleet):
    """The canary gets 12 real requests in the window, 6 of them 5xx; its
    probes fail once in 20 (not significant against 0 in 100): the shape of
    the faults scenario's case that CI once saw promoted."""

    def info(self, after=False, canary=None):
        result = super(FewRequestsFleet, self).info(after, canary)
        if after and canary is not None:
            for host, row in result['backends']['demoapp'].items():
                bad = host in engine.canary_hosts(canary)
                # Per balancer: 2 x (6, 3) for the canary, 2 x 5 x 11 for the baseline.
                row['req_tot'], row['hrsp_5xx'] = (6, 3) if bad else (11, 0)
        return result

    def samples(self, act, state):
        result = super(FewRequestsFleet, self).samples(act, state)
        for url in ['http://%s/' % h for h in engine.canary_hosts(state)]:
            for rnd in result['results']:
                rnd['samples'][url]['errors'] = 1
        return result


def test_a_canary_failing_most_of_its_few_real_requests_is_rolled_back():
    fleet = FewRequestsFleet()
    state = run(fleet)
    judged = state['steps'][0]['judge']
    http = judged['metrics']['http_5xx_ratio']
    assert (http['canary_count'], http['baseline_count']) == (12, 110)
    assert http['classification'] == 'high' and http['exact_test'] is True
    assert judged['verdict'] == 'fail' and judged['metrics']['probe_error_ratio']['failed'] is False
    assert state['decision'] == 'rolled_back' and state['rollback']['done'] == ['app1']
    assert "Fisher's exact test shows it" in state['halt']['reason']
    assert set(fleet.versions.values()) == {'v1'}
