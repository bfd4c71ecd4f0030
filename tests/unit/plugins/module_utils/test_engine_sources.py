# -*- coding: utf-8 -*-
"""The engine's analysis with the request log, Prometheus and the user's metrics, on test_engine's simulated fleet."""
from __future__ import annotations

import os
import sys

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engine import FakeFleet, run  # noqa: E402

ERRORS = {'name': 'app_errors', 'kind': 'ratio', 'critical': True, 'must_have_data': True,
          'errors_query': 'sum(increase(x_total{instance=~"$instances",code=~"5.."}[$window]))',
          'total_query': 'sum(increase(x_total{instance=~"$instances"}[$window]))'}


class SourcesFleet(FakeFleet):
    """Also answers the request-log and Prometheus tasks the analysis act asks for."""

    def __init__(self, canary_ms=2, canary_errors=0, prometheus_answers=True, custom=None, custom_failed='', **kw):
        super(SourcesFleet, self).__init__(**kw)
        self.custom_failed = custom_failed
        self.canary_ms, self.canary_errors = canary_ms, canary_errors
        self.prometheus_answers = prometheus_answers
        self.custom = custom
        self.acts = []

    def answer(self, state):
        result = super(SourcesFleet, self).answer(state)
        act = state['act']
        if act.get('phase') != 'analysis':
            return result
        self.acts.append(act)
        canary = act['canary']
        if act['log'] is not None:
            servers = dict((s, {'requests': 40, 'errors_5xx': 0, 'statuses': {'2xx': 40},
                                'response_ms': [self.canary_ms if s in canary else 2] * 40,
                                'total_ms': [3] * 40}) for s in act['log']['servers'])
            result['logs'] = {'balancers': dict((b, {'servers': servers}) for b in act['balancers'])}
        if act['prometheus'] is not None:
            answers = {}
            for query in act['prometheus']['queries']:
                canary_side = '|canary|' in query['name']
                value = (self.canary_errors if canary_side else 0) if query['name'].endswith('errors') else 100
                answers[query['name']] = {'values': [value] if self.prometheus_answers else [], 'series': 1,
                                          'query': query['query']}
            result['prometheus'] = {'probe': dict((p, {'answers': answers}) for p in act['probe'])}
        if self.custom is not None:
            result['custom'] = self.custom
        result['custom_failed'] = self.custom_failed
        return result


def test_request_log_latency_fails_a_slow_canary_and_the_step_shows_each_server():
    fleet = SourcesFleet(canary_ms=300)
    state = run(fleet, canary_haproxy_log='/var/log/haproxy.log', canary_analysis_interval=5,
                canary_analysis_count=2, canary_metric_options={'probe_latency_ms': {'dry_run': True}})
    assert state['decision'] == 'rolled_back'
    act = fleet.acts[0]
    assert act['log'] == {'path': '/var/log/haproxy.log', 'window': 11.0,
                          'servers': ['app1', 'app2', 'app3', 'app4', 'app5', 'app6']}
    step = state['steps'][0]
    metric = step['judge']['metrics']['traffic_latency_ms']
    assert metric['failed'] and (metric['canary'], metric['baseline']) == (300, 2)
    assert step['traffic']['app1']['role'] == 'canary' and step['traffic']['app1']['response_ms']['p50'] == 300
    # Two balancers, 40 requests each.
    assert step['traffic']['app2'] == {'role': 'baseline', 'requests': 80, 'errors_5xx': 0,
                                       'response_ms': {'count': 80, 'p50': 2, 'p95': 2, 'max': 2},
                                       'total_ms': {'count': 80, 'p50': 3, 'p95': 3, 'max': 3},
                                       'response_ms_samples': [2] * 50}
    assert step['judge']['metrics']['probe_latency_ms']['dry_run']
    assert 'Real traffic per server' in engine.report_markdown(engine.report(state, str))


def test_without_sources_the_act_asks_for_none():
    fleet = SourcesFleet()
    state = run(fleet)
    assert state['decision'] == 'promoted'
    assert fleet.acts[0]['log'] is None and fleet.acts[0]['prometheus'] is None
    assert 'traffic' not in state['steps'][0] and 'prometheus' not in state['steps'][0]


def test_prometheus_only_judgement_pass_and_fail():
    prometheus = dict(canary_prometheus_url='http://prom:9090', canary_prometheus_metrics=[ERRORS],
                      canary_metric_options={'http_5xx_ratio': {'enabled': False},
                                             'probe_error_ratio': {'enabled': False},
                                             'probe_latency_ms': {'enabled': False}})
    fleet = SourcesFleet()
    state = run(fleet, **prometheus)
    assert state['decision'] == 'promoted'
    queries = dict((q['name'], q['query']) for q in fleet.acts[0]['prometheus']['queries'])
    assert queries['app_errors|canary|errors'] == 'sum(increase(x_total{instance=~"app1",code=~"5.."}[10s]))'
    assert queries['app_errors|baseline|total'] == \
        'sum(increase(x_total{instance=~"app2|app3|app4|app5|app6"}[10s]))'
    assert list(state['steps'][0]['judge']['metrics']) == ['app_errors']
    assert state['steps'][0]['prometheus']['app_errors|canary|total'] == {
        'query': queries['app_errors|canary|total'], 'values': 1, 'series': 1, 'error': None}

    state = run(SourcesFleet(canary_errors=30), **prometheus)
    assert state['decision'] == 'rolled_back' and state['steps'][0]['judge']['metrics']['app_errors']['failed']

    state = run(SourcesFleet(prometheus_answers=False), **prometheus)
    assert state['decision'] == 'rolled_back'
    assert 'must_have_data: app_errors' in state['steps'][0]['judge']['reason']


def test_user_metrics_are_judged_and_bad_ones_halt_with_their_name():
    slow = [{'name': 'queue', 'kind': 'samples', 'baseline': [1] * 30, 'canary': [50] * 30}]
    state = run(SourcesFleet(custom=slow))
    assert state['decision'] == 'rolled_back'
    assert state['steps'][0]['judge']['metrics']['queue']['failed']
    assert state['steps'][0]['judge']['sources']['queue'] == 'custom'
    state = run(SourcesFleet(custom=[dict(slow[0], dry_run=True)]))
    assert state['decision'] == 'promoted'
    state = run(SourcesFleet(custom=[{'name': 'queue', 'kind': 'histogram', 'baseline': [], 'canary': []}]))
    assert state['decision'] == 'rolled_back'
    assert "could not be judged: metric 'queue': kind 'histogram'" in state['halt']['reason']


def test_failed_analysis_tasks_fail_the_step_naming_the_task_instead_of_judging_without_them():
    good = [{'name': 'queue', 'kind': 'samples', 'baseline': [1] * 30, 'canary': [1] * 30}]
    state = run(SourcesFleet(custom=good, custom_failed='Read the queue depth: connection refused'))
    assert state['decision'] == 'rolled_back'
    assert state['halt']['reason'] == ('step 1, batch 1: the analysis tasks (canary_analysis_tasks) failed, so their metrics are '
                                       'missing: Read the queue depth: connection refused')
    assert state['steps'][0]['judge'] == {}   # not judged without them
    assert run(SourcesFleet(custom=good))['decision'] == 'promoted'


def test_must_have_data_fails_an_otherwise_passing_canary():
    fleet = SourcesFleet(prometheus_answers=False)
    state = run(fleet, canary_prometheus_url='http://prom:9090', canary_prometheus_metrics=[ERRORS])
    verdict = state['steps'][0]['judge']
    assert state['decision'] == 'rolled_back' and verdict['verdict'] == 'fail'
    assert [n for n, m in verdict['metrics'].items() if m['failed']] == ['app_errors']
    assert verdict['metrics']['app_errors']['classification'] == 'nodata'
    # The same metric without the policy is only nodata, and the canary passes on the rest.
    state = run(SourcesFleet(prometheus_answers=False), canary_prometheus_url='http://prom:9090',
                canary_prometheus_metrics=[dict(ERRORS, must_have_data=False, critical=False)])
    assert state['decision'] == 'promoted'
