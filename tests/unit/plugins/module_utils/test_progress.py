# -*- coding: utf-8 -*-
"""The progress view (plugins/module_utils/_progress.py), fed what the callback receives in a run.

Whole runs go through the engine (_rollout_recording.record_run); the view
gets every state, every analysis interval's probe result and the finish
result, in order, as rollout_progress does.
"""
from __future__ import annotations

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _rollout_recording import RealisticFleet, record_run  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils import _progress as progress  # noqa: E402


def watch(events, view=None):
    """Every line the view prints, and what it said it waits for before each state."""
    view = view or progress.ProgressView()
    lines, waits = [], []
    for kind, data in events:
        if kind == 'state':
            lines += view.update(data)
            # What the next tasks (an actor's, then the coordinator's) would count down.
            waits.append((view.waiting(), view.waiting(coordinator=True)))
        elif kind == 'item':
            lines += view.interval(data)
        else:
            lines += view.summary(data)
    return lines, waits


def test_a_promoted_run_reads_step_by_step():
    events, state = record_run(RealisticFleet())
    lines, dummy = watch(events)
    text = '\n'.join(lines)
    assert 'step 1/4 (canary): app1, 10.0% of the traffic at weights app1=5, the other 5 servers 9 each' in lines
    # One line per batch, with its position and the seconds of each phase.
    batch_lines = [line for line in lines if re.match(r'step \d/4, batch \d/6: app\d -> v2: drained', line)]
    assert len(batch_lines) == 6
    # Batch 2 was drained by the canary's weights restore; steps 2 and 3 are judged too (at full
    # weight), so batch 3 has a drain of its own; batch 5 was drained by batch 4's ready.
    assert 'step 2/4, batch 2/6: app2 -> v2: drained 0.8 s (with the weights restore), switched 1.8 s, healthy 0.8 s, ' \
        'ready 0.6 s, analysed 30.3 s (34.3 s)' in lines
    assert 'step 3/4, batch 3/6: app3 -> v2: drained 0.8 s, switched 1.5 s, healthy 0.8 s, ready 0.6 s, ' \
        'analysed 30.3 s (34.0 s)' in lines
    assert 'step 4/4, batch 5/6: app5 -> v2: drained 0.8 s (with the last ready), switched 1.8 s, healthy 0.8 s, ' \
        'ready 0.6 s (4.0 s)' in lines
    assert 'step 2 verdict: pass, score 100 (score 100 reaches pass_score 95)' in lines
    assert 'traffic share of the canary: set 25.0%, measured 25.0% (300 of 1200 requests through HAProxy, 0 vs 0 5xx)' \
        in lines
    assert re.search(r'step 1/4, batch 1/6: app1 -> v2: .* analysed 30\.3 s, weights restored 0\.5 s', text)
    # Each interval once, as it completed, not again when the analysis is recorded.
    intervals = [line for line in lines if line.startswith('analysis interval')]
    assert [line.split(':')[0] for line in intervals] == ['analysis interval 1/3', 'analysis interval 2/3',
                                                          'analysis interval 3/3']
    assert re.match(r'analysis interval 1/3: canary 0/20 errors \(0\.0%\), p50 \d+\.\d ms, p95 \d+\.\d ms \| '
                    r'baseline 0/100 errors \(0\.0%\), p50 \d+\.\d ms, p95 \d+\.\d ms\Z',
                    intervals[0])
    share = state['steps'][0]['traffic_share']
    assert 'traffic share of the canary: set 10.0%% (asked 10%%), measured %s (%d of %d requests' % (
        progress.fmt_percent(share['measured_percent']), share['canary_requests'], share['requests']) in text
    assert 'verdict: pass, score 100 (score 100 reaches pass_score 95)' in lines
    # Intervals, traffic and verdict come before the canary batch's own line (the analysis ends it).
    assert lines.index('verdict: pass, score 100 (score 100 reaches pass_score 95)') < lines.index(
        [line for line in batch_lines if line.startswith('step 1/4')][0])
    assert lines[-4:] == ['decision: PROMOTED (v1 -> v2) after %s' % progress.fmt_seconds(events[-1][1]['report']['seconds']),
                          'steps: 4 of 4, batches 6 of 6; canary verdict pass, score 100',
                          'hosts: app1, app2, app3, app4, app5, app6 on v2',
                          'report: /tmp/canary-reports/report.html and /tmp/canary-reports/report.json']
    assert len(lines) == len(set(lines)), 'a line was printed twice'


def test_a_bad_canary_shows_its_intervals_verdict_failing_metrics_and_rollback():
    events, dummy = record_run(RealisticFleet(bad_canary=True))
    lines, dummy = watch(events)
    intervals = [line for line in lines if line.startswith('analysis interval')]
    assert len(intervals) == 3 and all(re.search(r'canary [5-9]/20 errors \((25|30|35|40|45)\.0%\)', i)
                                       for i in intervals)
    verdict = [line for line in lines if line.startswith('verdict: ')]
    # The verdict that stops the run: its line, then the reason once, as a list in words, statistics after.
    assert verdict == ['verdict: fail, score 25']
    assert not [line for line in lines if line.startswith('  failing metric ')]
    assert any(line.startswith('step 1/4, batch 1/6: app1 -> v2: drained') and line.endswith(', FAILED (34.0 s)')
               for line in lines)
    # At the halt, what stopped the run in words; the list follows once, in the summary at the end.
    halt = lines.index('HALTED (step 1): the canary failed its analysis (step 1, batch 1): verdict fail, score 25')
    assert lines[halt + 1] == 'rollback 1/1: app1 -> v1'
    decision = [n for n, line in enumerate(lines) if line.startswith('decision: ROLLED BACK (v2, previous v1) after ')]
    assert len(decision) == 1 and lines.index('reason: the canary failed its analysis (step 1, batch 1): verdict '
                                              'fail, score 25') == decision[0] + 1
    reason = decision[0] + 1
    assert lines[reason + 1] == ('  - 5xx responses through the balancer higher on the canary: 33.3% vs 0.0% on the '
                                 'baseline, past the critical limit (p<0.001; n 180 canary, 1620 baseline)')
    assert lines[reason + 2].startswith('  - failed probe requests higher on the canary: 38.3% vs 0.0% on the baseline')
    assert lines[reason + 3].startswith('steps: 0 of 4')
    # Readable numbers: 3 significant digits, never 17.
    assert all(not re.search(r'\d\.0*[1-9]\d{3,}', line) for line in lines[reason:reason + 3])
    # Printed once: no other line repeats the reason or a metric of it, nor the judge's statistics.
    for metric in ('5xx responses through the balancer', 'failed probe requests'):
        assert len([line for line in lines if metric in line]) == 1, metric
    assert len([line for line in lines if 'judged fail' in line or 'http_5xx_ratio' in line]) == 0
    assert 'rollback 1/1: app1 -> v1' in lines
    assert 'rolled back: app1' in lines and 'hosts: app1, app2, app3, app4, app5, app6 on v1' in lines


def test_intervals_come_from_the_state_when_the_analysis_was_not_a_loop():
    events, dummy = record_run(RealisticFleet())
    lines, dummy = watch([e for e in events if e[0] != 'item'])
    assert len([line for line in lines if line.startswith('analysis interval')]) == 3
    assert len([line for line in lines if line.startswith('step 3 analysis interval')]) == 3


def test_countdowns_name_what_is_waited_for_and_its_bound():
    events, dummy = record_run(RealisticFleet(), canary_pause=20, canary_drain_timeout=45)
    dummy, waits = watch(events)
    actor = [w[0] for w in waits if w[0]]
    assert ('drain app2', 45) in actor
    # The probe host is a balancer: each balancer probes the batch, then readies it.
    assert ('health check app2 from every balancer, then ready app2 (HAProxy health checks)', 120) in actor
    assert ('switch app2 to v2 and restart', None) in actor
    assert ('analysis interval 1/3 (10 s each)', None) in actor
    assert ('reading the releases on 6 hosts, pre-staging v2 on 6', None) in actor
    # The coordinator sleeps canary_pause after each step but the last: only then it has a countdown.
    pauses = [w[1] for w in waits if w[1]]
    assert pauses == [('pause after step %d of 4' % n, 20.0) for n in (1, 2, 3)]
    assert progress.ProgressView().waiting() is None


def test_the_analysis_countdown_counts_the_intervals_done():
    events, dummy = record_run(RealisticFleet())
    view = progress.ProgressView()
    for kind, data in events:
        if kind == 'item':
            view.interval(data)
            break
        view.update(data)
    assert view.waiting() == ('analysis interval 2/3 (10 s each)', None)


def test_a_probe_result_of_another_task_is_not_an_interval():
    events, dummy = record_run(RealisticFleet())
    view = progress.ProgressView()
    assert view.interval({'http://app1/': {'total': 1}}) == []   # no state yet
    view.update([e[1] for e in events if e[0] == 'state'][0])
    assert view.interval({'http://app1/': {'total': 1}}) == []   # no analysis pending


def test_record_analysis_merges_into_what_other_sources_recorded():
    events, state = record_run(RealisticFleet())
    step = state['steps'][0]
    intervals = step['intervals']
    assert [i['interval'] for i in intervals] == [1, 2, 3]
    assert intervals[0]['start'] < intervals[0]['end'] <= intervals[1]['start'] + 0.01
    assert intervals[0]['probe']['canary']['requests'] == 20 and intervals[0]['probe']['baseline']['requests'] == 100
    batch = step['batches'][0]
    other = dict(step, intervals=[{'logs': {'canary': {'p50_ms': 3.0}, 'baseline': {'p50_ms': 2.0}}}])
    samples = {'http://app1/': {'total': 2, 'errors': 1, 'latencies_ms': [4.0, 6.0]},
               'http://app2/': {'total': 2, 'errors': 0, 'latencies_ms': [1.0, 3.0]}}
    progress.record_analysis(state, other, batch, {}, {}, [samples], ['app1'], ['app2'],
                             batch['timings']['analysis']['started'] + 10)
    assert other['intervals'][0]['logs'] == {'canary': {'p50_ms': 3.0}, 'baseline': {'p50_ms': 2.0}}
    assert other['intervals'][0]['probe'] == {
        'canary': {'requests': 2, 'errors': 1, 'error_rate': 0.5, 'p50_ms': 5.0, 'p95_ms': 6.0},
        'baseline': {'requests': 2, 'errors': 0, 'error_rate': 0.0, 'p50_ms': 2.0, 'p95_ms': 3.0}}
    # No balancer snapshots: the share set is known, the measured one is not.
    assert other['traffic_share']['set_percent'] == 10.0 and 'measured_percent' not in other['traffic_share']


def test_traffic_share_measured_from_counters_and_not_after_a_reload():
    def snap(app1, app2, errors=0):
        return {'lb1': {'backends': {'b': {'app1': {'req_tot': app1, 'hrsp_5xx': errors}, 'app2': {'req_tot': app2}}}}}

    share = progress.traffic_share({'app1': 1, 'app2': 9}, ['app1'], snap(100, 900), snap(110, 990, 2), 'b', ['app2'])
    assert share == {'set_percent': 10.0, 'canary_requests': 10, 'canary_errors': 2, 'baseline_requests': 90,
                     'baseline_errors': 0, 'requests': 100, 'measured_percent': 10.0}
    reloaded = progress.traffic_share({'app1': 1, 'app2': 9}, ['app1'], snap(100, 900), snap(5, 40), 'b', ['app2'])
    assert reloaded['canary_requests'] is None and 'measured_percent' not in reloaded


@pytest.mark.parametrize('value, text', [
    (0.0045763489536144635, '0.00458'), (7.557499999999999, '7.56'), (100.0, '100'), (25, '25'),
    (1.6812e-123, '1.68e-123'), (None, '-'), ('pass', 'pass'),
])
def test_numbers_are_rounded_for_reading(value, text):
    assert progress.fmt_number(value) == text


def test_rates_and_seconds_read_as_a_person_writes_them():
    assert progress.fmt_rate(0.35) == '35.0%'
    assert progress.fmt_rate(0.0) == '0.0%'
    assert progress.fmt_rate(0.00012) == '0.012%'
    assert progress.fmt_seconds(0.84) == '0.8 s' and progress.fmt_seconds(254.4) == '254 s'
